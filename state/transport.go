package state

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Send and Receive move one snapshot over a connected Unix stream socket
// (SOCK_STREAM: the stream relies on byte-stream reads), the socketpair the
// new process inherits, after the upgrader's own handshake has agreed to
// do so. Nothing may sit between the conn and these calls that reads ahead
// (a bufio.Reader), or it would swallow snapshot bytes. A transport header
// goes first (PROTOCOL.md): on Linux, for a snapshot of up to 256 KiB, it
// carries a sealed memfd holding the snapshot; otherwise (a larger one,
// another platform, memfd_create unavailable) the snapshot bytes follow it
// on the socket, the encoder's output overlapping the decoder's work.
// Either way the receiver decodes while reading: nothing is buffered whole.

const (
	transportMagic     = "BTNX"
	transportVersion   = 1
	transportHeaderLen = 16

	kindMemfd  = 1 // one fd in SCM_RIGHTS: a sealed memfd of size bytes
	kindStream = 2 // the snapshot follows on the socket; size is 0
)

type transportHeader struct {
	kind byte
	size uint64
}

func (h transportHeader) marshal() []byte {
	b := make([]byte, transportHeaderLen)
	copy(b, transportMagic)
	b[4] = transportVersion
	b[5] = h.kind
	binary.BigEndian.PutUint64(b[8:], h.size)
	return b
}

func parseTransportHeader(b []byte) (transportHeader, error) {
	var h transportHeader
	if string(b[:4]) != transportMagic {
		return h, fmt.Errorf("%w: transport header starts with %q", ErrBadMagic, b[:4])
	}
	if b[4] != transportVersion {
		return h, fmt.Errorf("%w: transport version %d, this binary speaks %d", ErrFormatVersion, b[4], transportVersion)
	}
	if b[6] != 0 || b[7] != 0 {
		return h, fmt.Errorf("%w: reserved header bytes are %#x %#x", ErrTransport, b[6], b[7])
	}
	h.kind = b[5]
	h.size = binary.BigEndian.Uint64(b[8:])
	switch {
	case h.kind == kindMemfd:
	case h.kind == kindStream && h.size == 0:
	default:
		return h, fmt.Errorf("%w: header kind %d with size %d", ErrTransport, h.kind, h.size)
	}
	return h, nil
}

// Send writes a snapshot of reg to conn: it captures every participant
// (see Registry.WriteSnapshot; the caller freezes first) and hands the
// snapshot to the peer, which calls Receive. It returns the snapshot's
// length. Send returns once the snapshot is handed over; whether the peer
// restored it is for the upgrader's handshake to tell. A snapshot of up to
// 256 KiB goes in a sealed memfd and Send does not wait for the peer; a
// larger one streams, and Send returns once the peer has read all but what
// the socket buffers: the peer must be receiving.
//
// To abort, cancel ctx: Send stops between chunks and, if blocked on conn,
// sets conn's deadline in the past to unblock; the error then wraps
// ctx.Err(). After any error the framing of conn is lost (part of a
// snapshot may have been written): close it.
func Send(ctx context.Context, conn *net.UnixConn, reg *Registry) (int64, error) {
	return sendWith(ctx, conn, snapshotFor(reg, nil))
}

// SendFor is Send for a peer that accepts a (what its Registry.Accepts
// returned, in the handshake): each section goes once, at the newest
// version the peer reads, migrated down if the peer is an older release
// (Registry.WriteSnapshotFor). A peer that reads this binary's own
// versions gets exactly what Send sends without steps down. Call
// CheckReadable(a) before freezing; SendFor fails, sending nothing, if it
// does not hold.
func SendFor(ctx context.Context, conn *net.UnixConn, reg *Registry, a Accepts) (int64, error) {
	return sendWith(ctx, conn, snapshotFor(reg, &a))
}

// SendStream is Send without a memfd, on every platform, whatever the
// size: the snapshot bytes follow the transport header on conn, and
// Receive reads them from there. It blocks until the peer has read all but
// the socket's buffer, while encoding and decoding overlap. Send does the
// same for a snapshot larger than 256 KiB (BenchmarkSendReceive compares
// the ways).
func SendStream(ctx context.Context, conn *net.UnixConn, reg *Registry) (int64, error) {
	return sendVia(ctx, conn, snapshotFor(reg, nil), sendStream)
}

// A writeFunc writes one snapshot to w, stopping between chunks once ctx
// is done, and returns its length.
type writeFunc func(ctx context.Context, w io.Writer) (int64, error)

// snapshotFor writes reg's snapshot for the reader that accepts a (nil: any
// reader).
func snapshotFor(reg *Registry, a *Accepts) writeFunc {
	return func(ctx context.Context, w io.Writer) (int64, error) { return reg.writeSnapshot(ctx, w, a) }
}

// sendWith sends what write writes the platform's way (send).
func sendWith(ctx context.Context, conn *net.UnixConn, write writeFunc) (int64, error) {
	return sendVia(ctx, conn, write, send)
}

// sendVia sends what write writes by send: the platform's way, or, for
// SendStream and tests, another.
func sendVia(ctx context.Context, conn *net.UnixConn, write writeFunc, send func(context.Context, *net.UnixConn, writeFunc) (int64, error)) (int64, error) {
	stop := abortOn(ctx, conn)
	n, err := send(ctx, conn, write)
	if !stop() {
		return n, fmt.Errorf("send snapshot: %w", ctx.Err())
	}
	if err != nil {
		return n, fmt.Errorf("send snapshot: %w", err)
	}
	return n, nil
}

// Receive reads a snapshot sent by Send from conn and restores reg from it,
// as Registry.ReadSnapshot does. It reads nothing from conn beyond the
// snapshot, so the handshake can go on over conn afterwards. A received
// memfd must carry the shrink, grow, write and seal seals (else
// ErrNotSealed) and match the size in the header; it is closed before
// Receive returns, and so is any other fd that arrived with the header.
//
// To abort, cancel ctx, as for Send. After an error, conn's framing is
// lost and, as with ReadSnapshot, the restores made are undone (unless the
// error wraps ErrPartialRestore): do not report ready.
func Receive(ctx context.Context, conn *net.UnixConn, reg *Registry) (Info, error) {
	return receiveWith(ctx, conn, reg, readRestore)
}

// receiveWith is Receive reading the snapshot in mode: a whole one or the
// last round (readRestore), or a first or middle round (readPreCopy).
func receiveWith(ctx context.Context, conn *net.UnixConn, reg *Registry, mode readMode) (Info, error) {
	stop := abortOn(ctx, conn)
	info, err := receive(ctx, conn, reg, mode)
	if !stop() {
		return info, fmt.Errorf("receive snapshot: %w", ctx.Err())
	}
	if err != nil {
		return info, fmt.Errorf("receive snapshot: %w", err)
	}
	return info, nil
}

// abortOn makes conn's blocked and future I/O fail once ctx is done. The
// returned stop detaches it; it returns false if ctx was done first, in
// which case the I/O may have been cut short and the outcome is ctx's
// error.
func abortOn(ctx context.Context, conn *net.UnixConn) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		// A deadline in the past fails pending reads and writes at once.
		conn.SetDeadline(time.Unix(1, 0))
	})
}

// streamBuffer is the write buffer of a streamed snapshot: the framing
// around the chunks goes out in few writes.
const streamBuffer = 64 << 10

// sendStream writes a stream header and then the snapshot itself to conn,
// through a buffer.
func sendStream(ctx context.Context, conn *net.UnixConn, write writeFunc) (int64, error) {
	if _, err := conn.Write(transportHeader{kind: kindStream}.marshal()); err != nil {
		return 0, fmt.Errorf("write transport header: %w", err)
	}
	w := bufio.NewWriterSize(conn, streamBuffer)
	n, err := write(ctx, w)
	if err == nil {
		err = w.Flush()
	}
	return n, err
}

// receiveStream decodes, in mode, a snapshot that follows the header on
// conn.
func receiveStream(ctx context.Context, conn io.Reader, reg *Registry, mode readMode) (Info, error) {
	return reg.readSnapshot(ctx, conn, mode)
}
