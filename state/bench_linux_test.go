//go:build linux

package state

import (
	"context"
	"io"
	"math"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSendReceive moves a snapshot of 2 or 64 MiB from one end of a
// socketpair to the other in-process, from Capture to Restore, and compares
// it with one copy of the payload: Send as it chooses (memfd up to
// memfdMax, else the stream), the memfd whatever the size (mapped on
// receive), the memfd as it was before the choice and the mapping
// (memfd-before: the encoder writing into the memfd, pread on receive),
// and the stream. kernel-floor does only what the memfd path asks of the
// kernel, without any encoding: write the bytes into a new memfd, seal it,
// read them back, close it.
func BenchmarkSendReceive(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"2MiB", 2 << 20}, {"64MiB", 64 << 20}} {
		b.Run(size.name, func(b *testing.B) { benchSendReceive(b, size.n) })
	}
}

// transportModes are the ways BenchmarkSendReceive* move a snapshot.
var transportModes = []struct {
	name string
	send func(context.Context, *net.UnixConn, *Registry) (int64, error)
	// memfdMax and mapped set the package's knobs for the run.
	memfdMax int
	mapped   bool
}{
	{"send", Send, memfdMax, true},
	{"memfd", Send, math.MaxInt, true},
	{"memfd-before", sendMemfdBefore, 0, false},
	{"stream", SendStream, memfdMax, true},
}

// sendMemfdBefore is Send as it was before it chose between the memfd and
// the stream: the encoder writing straight into the memfd, for comparison.
func sendMemfdBefore(ctx context.Context, conn *net.UnixConn, reg *Registry) (int64, error) {
	fd, err := unix.MemfdCreate("baton-snapshot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), "memfd:baton-snapshot")
	defer f.Close()
	n, err := reg.writeSnapshot(ctx, f, nil)
	if err != nil {
		return n, err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
		return n, err
	}
	hdr := transportHeader{kind: kindMemfd, size: uint64(n)}.marshal()
	_, _, err = conn.WriteMsgUnix(hdr, unix.UnixRights(int(f.Fd())), nil)
	return n, err
}

// setTransport sets memfdMax and mapReceived until the returned func runs.
func setTransport(max int, mapped bool) (restore func()) {
	oldMax, oldMapped := memfdMax, mapReceived
	memfdMax, mapReceived = max, mapped
	return func() { memfdMax, mapReceived = oldMax, oldMapped }
}

func benchSendReceive(b *testing.B, size int) {
	src := bigPattern(size)
	dst := make([]byte, size)
	sender := payloadRegistry(b, src)
	receiver := newRegistry(b, Options{})
	receiver.Register(Participant{
		Name:    "payload",
		Capture: func(io.Writer) error { return nil },
		Restore: func(r io.Reader) error { _, err := io.ReadFull(r, dst); return err },
	})
	for _, mode := range transportModes {
		b.Run(mode.name, func(b *testing.B) {
			defer setTransport(mode.memfdMax, mode.mapped)()
			old, new := socketPair(b)
			ctx := context.Background()
			loopVsCopy(b, dst, src, func() error {
				// The stream blocks until read: send from a goroutine.
				done := goSend(func() (int64, error) { return mode.send(ctx, old, sender) })
				_, err := Receive(ctx, new, receiver)
				if res := <-done; err == nil {
					err = res.err
				}
				return err
			})
		})
	}
	b.Run("kernel-floor", func(b *testing.B) {
		loopVsCopy(b, dst, src, func() error {
			fd, err := unix.MemfdCreate("bench", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
			if err != nil {
				return err
			}
			f := os.NewFile(uintptr(fd), "bench")
			defer f.Close()
			for off := 0; off < size; off += maxChunk {
				if _, err := f.Write(src[off : off+maxChunk]); err != nil {
					return err
				}
			}
			if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
				return err
			}
			for off := 0; off < size; off += readPiece {
				if _, err := f.ReadAt(dst[off:off+readPiece], int64(off)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// BenchmarkSendReceiveSmall hands over the snapshot of a process with
// little state, as in an upgrade of a service without state of its own:
// five sections of 100 to 1,000 bytes, each Send and Receive in full, in
// each of the ways of BenchmarkSendReceive.
func BenchmarkSendReceiveSmall(b *testing.B) {
	sender := newRegistry(b, Options{})
	receiver := newRegistry(b, Options{})
	for i, n := range []int{100, 300, 1000, 200, 150} {
		name := "part" + string(rune('a'+i))
		src := pattern(n, byte(i))
		sender.Register(Participant{Name: name,
			Capture: func(w io.Writer) error { _, err := w.Write(src); return err },
			Restore: func(io.Reader) error { return nil }})
		receiver.Register(Participant{Name: name,
			Capture: func(io.Writer) error { return nil },
			Restore: func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }})
	}
	for _, mode := range transportModes {
		b.Run(mode.name, func(b *testing.B) {
			defer setTransport(mode.memfdMax, mode.mapped)()
			old, new := socketPair(b)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				done := goSend(func() (int64, error) { return mode.send(ctx, old, sender) })
				_, err := Receive(ctx, new, receiver)
				if res := <-done; err == nil {
					err = res.err
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
