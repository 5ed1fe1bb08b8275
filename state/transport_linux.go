//go:build linux

package state

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// allSeals make a memfd immutable: its size and contents can no longer
// change, and no seal can be removed. A receiver that finds them all can
// read the snapshot without copying it first and without trusting the
// sender to leave it alone.
const allSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL

// maxFDs is how many fds Receive makes room for with the header. One is
// expected; room for a few more lets it close strays instead of having the
// kernel truncate the message.
const maxFDs = 4

// memfdMax is the largest snapshot Send puts in a memfd; a larger one
// streams over the socket. On a small snapshot the memfd is the faster way
// (one write, one sendmsg, the receiver decodes from a mapping, where the
// stream costs a system call per piece of framing on each side); on a large
// one the stream is: each byte through tmpfs costs a fresh page, written
// and freed, where the stream reuses the socket's buffers and overlaps
// encoding with decoding (BenchmarkSendReceive: 3 to 4 times faster at 2
// and 64 MiB on a 2-core VM), and the snapshot takes no memory of its own
// size. mapReceived says whether Receive maps a memfd (see mapMemfd).
// Tests and BenchmarkSendReceive change both to measure each way in the
// same run.
var (
	memfdMax    = 256 << 10
	mapReceived = true
)

// memfdCreate is unix.MemfdCreate; tests replace it to take the fallback.
var memfdCreate = unix.MemfdCreate

// errNoMemfd marks a failure of memfd_create itself (old kernel, seccomp):
// Send falls back to the stream.
var errNoMemfd = errors.New("memfd unavailable")

// send captures the snapshot into memory up to memfdMax bytes. If it ends
// there, it goes in a sealed memfd (or, if memfd_create fails, on the
// stream); past that, the stream header goes out, then what was buffered,
// and the rest of the capture streams behind it.
func send(ctx context.Context, conn *net.UnixConn, write writeFunc) (int64, error) {
	sp := &spillWriter{max: memfdMax, conn: conn}
	n, err := write(ctx, sp)
	if err == nil {
		err = sp.flush()
	}
	if err != nil || sp.out != nil {
		return n, err
	}
	err = sendMemfd(conn, sp.buf)
	if errors.Is(err, errNoMemfd) {
		sp.max = -1 // spill now: the whole snapshot streams
		if _, err = sp.Write(nil); err == nil {
			err = sp.flush()
		}
	}
	return n, err
}

// A spillWriter holds what is written in memory up to max bytes; at the
// first write that would pass it, it sends the stream header and the bytes
// held on conn, and from then on writes to conn through a buffer.
type spillWriter struct {
	max  int
	conn *net.UnixConn
	buf  []byte
	out  *bufio.Writer // nil until spilled
}

func (s *spillWriter) Write(p []byte) (int, error) {
	if s.out == nil && len(s.buf)+len(p) <= s.max {
		s.buf = append(s.buf, p...)
		return len(p), nil
	}
	if s.out == nil {
		if _, err := s.conn.Write(transportHeader{kind: kindStream}.marshal()); err != nil {
			return 0, fmt.Errorf("write transport header: %w", err)
		}
		s.out = bufio.NewWriterSize(s.conn, streamBuffer)
		held := s.buf
		s.buf = nil
		if _, err := s.out.Write(held); err != nil {
			return 0, err
		}
	}
	return s.out.Write(p)
}

// flush sends what the stream buffer holds, if spilled.
func (s *spillWriter) flush() error {
	if s.out == nil {
		return nil
	}
	return s.out.Flush()
}

// sendMemfd puts snap in a memfd, seals it and passes it.
func sendMemfd(conn *net.UnixConn, snap []byte) error {
	fd, err := memfdCreate("baton-snapshot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("%w: memfd_create: %w", errNoMemfd, err)
	}
	// The os.File owns fd from here on, and closes it on every path. The
	// kernel keeps its own reference to the memfd while the message is
	// in flight, so closing it once sendmsg returns is safe.
	f := os.NewFile(uintptr(fd), "memfd:baton-snapshot")
	defer f.Close()
	if _, err := f.Write(snap); err != nil {
		return fmt.Errorf("write memfd: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
		return fmt.Errorf("seal memfd: %w", err)
	}
	hdr := transportHeader{kind: kindMemfd, size: uint64(len(snap))}.marshal()
	w, _, err := conn.WriteMsgUnix(hdr, unix.UnixRights(int(f.Fd())), nil)
	if err == nil && w < len(hdr) {
		// A stream socket may take part of the header; the fd went with
		// the first byte.
		_, err = conn.Write(hdr[w:])
	}
	if err != nil {
		return fmt.Errorf("send memfd: %w", err)
	}
	return nil
}

func receive(ctx context.Context, conn *net.UnixConn, reg *Registry, mode readMode) (Info, error) {
	hdr, fds, err := readHeader(conn)
	// Every fd received is closed here unless handed on (set to -1).
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	if err != nil {
		return Info{}, err
	}
	switch hdr.kind {
	case kindStream:
		if len(fds) != 0 {
			return Info{}, fmt.Errorf("%w: %d fds came with a stream header", ErrTransport, len(fds))
		}
		return receiveStream(ctx, conn, reg, mode)
	default: // kindMemfd; parseTransportHeader admits no other.
		if len(fds) != 1 {
			return Info{}, fmt.Errorf("%w: %d fds came with a memfd header, want 1", ErrTransport, len(fds))
		}
		fd := fds[0]
		fds[0] = -1
		return receiveMemfd(ctx, fd, hdr.size, reg, mode)
	}
}

// readHeader reads the transport header and the fds that came with it.
func readHeader(conn *net.UnixConn) (transportHeader, []int, error) {
	hdr := make([]byte, transportHeaderLen)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	var fds []int
	for got := 0; got < len(hdr); {
		// net reads with MSG_CMSG_CLOEXEC on Linux, so no received fd
		// can leak into a child before it is closed.
		n, oobn, flags, _, err := conn.ReadMsgUnix(hdr[got:], oob)
		fds = append(fds, parseRights(oob[:oobn])...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return transportHeader{}, fds, fmt.Errorf("read transport header: %w", err)
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return transportHeader{}, fds, fmt.Errorf("%w: more than %d fds came with the header", ErrTransport, maxFDs)
		}
		if n == 0 {
			return transportHeader{}, fds, fmt.Errorf("read transport header: %w", io.ErrUnexpectedEOF)
		}
		got += n
	}
	h, err := parseTransportHeader(hdr)
	return h, fds, err
}

// parseRights returns the fds in the SCM_RIGHTS messages of oob.
func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

// receiveMemfd checks the memfd fd, takes ownership of it, and restores
// reg from it in mode.
func receiveMemfd(ctx context.Context, fd int, size uint64, reg *Registry, mode readMode) (Info, error) {
	f := os.NewFile(uintptr(fd), "memfd:baton-snapshot")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return Info{}, fmt.Errorf("%w: F_GET_SEALS: %w (not a memfd?)", ErrNotSealed, err)
	}
	if seals&allSeals != allSeals {
		return Info{}, fmt.Errorf("%w: seals %#x, want all of %#x", ErrNotSealed, seals, allSeals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Info{}, fmt.Errorf("stat memfd: %w", err)
	}
	if uint64(st.Size) != size {
		return Info{}, fmt.Errorf("%w: header says %d bytes, memfd holds %d", ErrTransport, size, st.Size)
	}
	if st.Size > reg.opts.MaxSize {
		return Info{}, fmt.Errorf("%w: memfd holds %d bytes, the limit is %d (Options.MaxSize)", ErrTooLarge, st.Size, reg.opts.MaxSize)
	}
	src, unmap := mapMemfd(f, st.Size)
	defer unmap()
	info, err := reg.readSnapshot(ctx, src, mode)
	if err == nil && info.Bytes != st.Size {
		return info, fmt.Errorf("%w: memfd holds %d bytes after the snapshot", ErrCorrupt, st.Size-info.Bytes)
	}
	return info, err
}

// mapMemfd returns a reader of the sealed memfd f's size bytes: its pages
// mapped read-only into this process, so the decoder reads them in place,
// without a system call per field and without the kernel copying them
// first. The seals make the mapping safe: the file can neither shrink
// under it (no SIGBUS) nor change. The decoder copies what it returns out
// of the mapping, so nothing refers to it once unmap has run. If mmap
// fails, the reader falls back to positioned reads.
func mapMemfd(f *os.File, size int64) (io.Reader, func()) {
	if mapReceived && size > 0 && size == int64(int(size)) {
		data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
		if err == nil {
			return bytes.NewReader(data), func() { unix.Munmap(data) }
		}
	}
	return io.NewSectionReader(f, 0, size), func() {}
}
