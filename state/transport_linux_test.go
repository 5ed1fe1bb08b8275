//go:build linux

package state

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// memfdWith returns a memfd holding data with the given seals, closed at
// the end of the test.
func memfdWith(t testing.TB, data []byte, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Write(fd, data); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// sendRaw writes a transport header with fds attached, as a broken or
// hostile sender would.
func sendRaw(t testing.TB, conn *net.UnixConn, hdr []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(hdr, oob, nil); err != nil {
		t.Fatal(err)
	}
}

func TestReceiveRejects(t *testing.T) {
	snap := snapshotOf(t, newRegistry(t, Options{}, &blob{name: "a", data: []byte("hello")}))
	size := uint64(len(snap))
	memfdHdr := transportHeader{kind: kindMemfd, size: size}.marshal()
	badMagic := bytes.Clone(memfdHdr)
	copy(badMagic, "XXXX")
	badVersion := bytes.Clone(memfdHdr)
	badVersion[4] = 9
	badKind := bytes.Clone(memfdHdr)
	badKind[5] = 7

	tests := []struct {
		name    string
		hdr     []byte
		fds     func(t *testing.T) []int
		opts    Options
		wantErr error
	}{
		{"unsealed memfd", memfdHdr, func(t *testing.T) []int { return []int{memfdWith(t, snap, 0)} }, Options{}, ErrNotSealed},
		{"seal missing", memfdHdr, func(t *testing.T) []int {
			return []int{memfdWith(t, snap, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)}
		}, Options{}, ErrNotSealed},
		{"not a memfd", memfdHdr, func(t *testing.T) []int {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			return []int{int(r.Fd())}
		}, Options{}, ErrNotSealed},
		{"size mismatch", transportHeader{kind: kindMemfd, size: size + 1}.marshal(), func(t *testing.T) []int { return []int{memfdWith(t, snap, allSeals)} }, Options{}, ErrTransport},
		{"trailing bytes", transportHeader{kind: kindMemfd, size: size + 3}.marshal(), func(t *testing.T) []int {
			return []int{memfdWith(t, append(bytes.Clone(snap), "xyz"...), allSeals)}
		}, Options{}, ErrCorrupt},
		{"over MaxSize", memfdHdr, func(t *testing.T) []int { return []int{memfdWith(t, snap, allSeals)} }, Options{MaxSize: int64(size) - 1}, ErrTooLarge},
		{"corrupt content", memfdHdr, func(t *testing.T) []int {
			return []int{memfdWith(t, patch(snap, len(snap)-1, ^snap[len(snap)-1]), allSeals)}
		}, Options{}, ErrCorrupt},
		{"two fds", memfdHdr, func(t *testing.T) []int {
			return []int{memfdWith(t, snap, allSeals), memfdWith(t, snap, allSeals)}
		}, Options{}, ErrTransport},
		{"too many fds", memfdHdr, func(t *testing.T) []int {
			fds := make([]int, maxFDs+2)
			for i := range fds {
				fds[i] = memfdWith(t, snap, allSeals)
			}
			return fds
		}, Options{}, ErrTransport},
		{"memfd header without fd", memfdHdr, func(*testing.T) []int { return nil }, Options{}, ErrTransport},
		{"stream header with fd", transportHeader{kind: kindStream}.marshal(), func(t *testing.T) []int { return []int{memfdWith(t, snap, allSeals)} }, Options{}, ErrTransport},
		{"bad magic", badMagic, func(*testing.T) []int { return nil }, Options{}, ErrBadMagic},
		{"bad version", badVersion, func(*testing.T) []int { return nil }, Options{}, ErrFormatVersion},
		{"bad kind", badKind, func(*testing.T) []int { return nil }, Options{}, ErrTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, new := socketPair(t)
			sendRaw(t, old, tt.hdr, tt.fds(t)...)
			dst := &blob{name: "a"}
			_, err := Receive(context.Background(), new, newRegistry(t, tt.opts, dst))
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Receive = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestSendFallsBackToStream(t *testing.T) {
	memfdCreate = func(string, int) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { memfdCreate = unix.MemfdCreate })

	old, new := socketPair(t)
	reg := newRegistry(t, Options{}, &blob{name: "a", data: []byte("hello")})
	done := goSend(func() (int64, error) { return Send(context.Background(), old, reg) })
	hdr := make([]byte, transportHeaderLen)
	if _, err := io.ReadFull(new, hdr); err != nil {
		t.Fatal(err)
	}
	if h, err := parseTransportHeader(hdr); err != nil || h.kind != kindStream {
		t.Fatalf("header %+v, %v; want the stream kind", h, err)
	}
	dst := &blob{name: "a"}
	if _, err := receiveStream(context.Background(), new, newRegistry(t, Options{}, dst), readRestore); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.err != nil || string(dst.got) != "hello" {
		t.Errorf("Send = %v, restored %q", res.err, dst.got)
	}
}

// TestSendChoosesBySize checks the kind Send uses around memfdMax, and
// that the snapshot arrives whole either way: up to memfdMax in a sealed
// memfd, beyond it on the stream, the bytes held before the spill first.
func TestSendChoosesBySize(t *testing.T) {
	// A snapshot's framing around one section's payload.
	framing := len(snapshotOf(t, newRegistry(t, Options{}, &blob{name: "a", data: nil})))
	for _, tt := range []struct {
		name    string
		payload int
		want    byte
	}{
		{"empty", 0, kindMemfd},
		{"at the limit", memfdMax - framing - chunkHeaderLen, kindMemfd},
		{"one byte over", memfdMax - framing - chunkHeaderLen + 1, kindStream},
		{"several chunks", 3*maxChunk + 5, kindStream},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, new := socketPair(t)
			data := pattern(tt.payload, 7)
			reg := newRegistry(t, Options{}, &blob{name: "a", data: data})
			done := goSend(func() (int64, error) { return Send(context.Background(), old, reg) })
			hdr := make([]byte, transportHeaderLen)
			oob := make([]byte, unix.CmsgSpace(4))
			n, oobn, _, _, err := new.ReadMsgUnix(hdr, oob)
			if err != nil || n != len(hdr) {
				t.Fatalf("header: %d bytes, %v", n, err)
			}
			fds := parseRights(oob[:oobn])
			h, err := parseTransportHeader(hdr)
			if err != nil || h.kind != tt.want {
				t.Fatalf("header %+v, %v; want kind %d", h, err, tt.want)
			}
			dst := &blob{name: "a"}
			rreg := newRegistry(t, Options{}, dst)
			if h.kind == kindMemfd {
				if len(fds) != 1 {
					t.Fatalf("%d fds with the memfd header", len(fds))
				}
				_, err = receiveMemfd(context.Background(), fds[0], h.size, rreg, readRestore)
			} else {
				_, err = receiveStream(context.Background(), new, rreg, readRestore)
			}
			if err != nil {
				t.Fatal(err)
			}
			if res := <-done; res.err != nil || !bytes.Equal(dst.got, data) {
				t.Errorf("Send = %v, restored %d bytes, want %d", res.err, len(dst.got), len(data))
			}
		})
	}
}

// openFDs counts this process's open fds.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) - 1 // ReadDir's own fd
}

// TestNoFDLeaks fails sends and receives in every way that involves an fd,
// 100 times, and checks that no fd is left open.
func TestNoFDLeaks(t *testing.T) {
	snap := snapshotOf(t, newRegistry(t, Options{}, &blob{name: "a", data: []byte("hello")}))
	boom := errors.New("boom")
	// Small enough for a memfd: nothing reads the stream here, so a
	// capture that spilled to it would block.
	failing := newRegistry(t, Options{}, &blob{name: "a", data: pattern(memfdMax/2, 1)})
	failing.Register(Participant{Name: "b", Capture: func(io.Writer) error { return boom }, Restore: func(io.Reader) error { return nil }})

	before := openFDs(t)
	for i := range 100 {
		old, new := socketPairNoCleanup(t)
		switch i % 5 {
		case 0: // Capture fails before anything is sent
			if _, err := Send(context.Background(), old, failing); !errors.Is(err, boom) {
				t.Fatalf("Send = %v", err)
			}
		case 1: // the peer is gone when the memfd is passed
			new.Close()
			if _, err := Send(context.Background(), old, newRegistry(t, Options{}, &blob{name: "a"})); err == nil {
				t.Fatal("Send to a closed peer succeeded")
			}
		case 2: // an unsealed memfd arrives
			fd := memfdRaw(t, snap, 0)
			sendRaw(t, old, transportHeader{kind: kindMemfd, size: uint64(len(snap))}.marshal(), fd)
			unix.Close(fd)
			if _, err := Receive(context.Background(), new, newRegistry(t, Options{}, &blob{name: "a"})); !errors.Is(err, ErrNotSealed) {
				t.Fatalf("Receive = %v", err)
			}
		case 3: // too many fds arrive: a few, or more than there is room for
			fds := make([]int, 2+i%2*maxFDs)
			for j := range fds {
				fds[j] = memfdRaw(t, snap, allSeals)
			}
			sendRaw(t, old, transportHeader{kind: kindMemfd, size: uint64(len(snap))}.marshal(), fds...)
			for _, fd := range fds {
				unix.Close(fd)
			}
			if _, err := Receive(context.Background(), new, newRegistry(t, Options{}, &blob{name: "a"})); !errors.Is(err, ErrTransport) {
				t.Fatalf("Receive = %v", err)
			}
		case 4: // a sealed memfd with a damaged snapshot
			fd := memfdRaw(t, patch(snap, 20, 0), allSeals)
			sendRaw(t, old, transportHeader{kind: kindMemfd, size: uint64(len(snap))}.marshal(), fd)
			unix.Close(fd)
			if _, err := Receive(context.Background(), new, newRegistry(t, Options{}, &blob{name: "a"})); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Receive = %v", err)
			}
		}
		old.Close()
		new.Close()
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}

// socketPairNoCleanup is socketPair for loops that close as they go.
func socketPairNoCleanup(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// memfdRaw is memfdWith without cleanup: the caller closes it.
func memfdRaw(t testing.TB, data []byte, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, data); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// TestSendFailsAfterSpill fails a capture after the snapshot has spilled
// to the stream: Send returns the capture's error, Receive a truncated
// snapshot (ErrCorrupt) once the sender closes, and the section that did
// arrive whole is undone.
func TestSendFailsAfterSpill(t *testing.T) {
	boom := errors.New("boom")
	big := &blob{name: "a", data: pattern(2*memfdMax, 3)}
	sender := newRegistry(t, Options{}, big)
	sender.Register(Participant{Name: "b", Capture: func(io.Writer) error { return boom }, Restore: func(io.Reader) error { return nil }})
	old, new := socketPair(t)
	done := goSend(func() (int64, error) {
		n, err := Send(context.Background(), old, sender)
		old.Close() // as the upgrader does after a failed send
		return n, err
	})
	dst := &blob{name: "a"}
	receiver := newRegistry(t, Options{}, dst)
	receiver.Register(Participant{Name: "b", Capture: func(io.Writer) error { return nil }, Restore: func(io.Reader) error { return nil }})
	_, err := Receive(context.Background(), new, receiver)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Receive = %v, want ErrCorrupt", err)
	}
	if res := <-done; !errors.Is(res.err, boom) {
		t.Errorf("Send = %v, want the capture's error", res.err)
	}
	if len(dst.got) != 0 {
		t.Errorf("%d bytes of a failed snapshot kept restored", len(dst.got))
	}
}
