//go:build linux

package state

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkSendReceive moves a 64 MiB snapshot from one end of a
// socketpair to the other in-process, from Capture to Restore, and
// compares it with one copy of the payload.
func BenchmarkSendReceive(b *testing.B) {
	const size = 64 << 20
	src := bigPattern(size)
	dst := make([]byte, size)
	baseline := copyTime(dst, src)
	sender := payloadRegistry(b, src)
	receiver := newRegistry(b, Options{})
	receiver.Register(Participant{
		Name:    "payload",
		Capture: func(io.Writer) error { return nil },
		Restore: func(r io.Reader) error { _, err := io.ReadFull(r, dst); return err },
	})
	stream := func(ctx context.Context, c *net.UnixConn, r *Registry) (int64, error) {
		return sendWith(ctx, c, r, sendStream)
	}
	for _, mode := range []struct {
		name string
		send func(context.Context, *net.UnixConn, *Registry) (int64, error)
	}{{"memfd", Send}, {"stream", stream}} {
		b.Run("64MiB/"+mode.name, func(b *testing.B) {
			old, new := socketPair(b)
			ctx := context.Background()
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// The stream blocks until read: send from a goroutine.
				done := goSend(func() (int64, error) { return mode.send(ctx, old, sender) })
				if _, err := Receive(ctx, new, receiver); err != nil {
					b.Fatal(err)
				}
				if res := <-done; res.err != nil {
					b.Fatal(res.err)
				}
			}
			b.ReportMetric(nsPerOp(b)/float64(baseline.Nanoseconds()), "x_copy")
		})
	}
}
