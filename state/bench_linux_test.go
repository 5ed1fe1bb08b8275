//go:build linux

package state

import (
	"context"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSendReceive moves a 64 MiB snapshot from one end of a
// socketpair to the other in-process, from Capture to Restore, and
// compares it with one copy of the payload. kernel-floor does only what
// the memfd path asks of the kernel, without any encoding: write 64 MiB
// into a new memfd, seal it, read it back, close it.
func BenchmarkSendReceive(b *testing.B) {
	const size = 64 << 20
	src := bigPattern(size)
	dst := make([]byte, size)
	sender := payloadRegistry(b, src)
	receiver := newRegistry(b, Options{})
	receiver.Register(Participant{
		Name:    "payload",
		Capture: func(io.Writer) error { return nil },
		Restore: func(r io.Reader) error { _, err := io.ReadFull(r, dst); return err },
	})
	for _, mode := range []struct {
		name string
		send func(context.Context, *net.UnixConn, *Registry) (int64, error)
	}{{"memfd", Send}, {"stream", SendStream}} {
		b.Run("64MiB/"+mode.name, func(b *testing.B) {
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
	b.Run("64MiB/kernel-floor", func(b *testing.B) {
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
