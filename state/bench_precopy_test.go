//go:build unix

package state

import (
	"context"
	"io"
	"testing"
)

// BenchmarkPreCopy moves the state of one participant of 8 or 64 MiB over
// a socketpair, from Capture to Restore, in each round of the handoff and
// in one, in the same run:
//
//   - one-round: Send and Receive of the whole state, as without PreCopy:
//     all of it is the pause (the old process is frozen).
//   - first-round: SendPreCopy and ReceivePreCopy of the same state, the
//     old process running: not part of the pause.
//   - second-round: SendFor and Receive after a first round, the delta 64
//     KiB (what changed since the first round): the pause with PreCopy.
//
// second-round/one-round is what the pause becomes.
func BenchmarkPreCopy(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"8MiB", 8 << 20}, {"64MiB", 64 << 20}} {
		b.Run(size.name, func(b *testing.B) { benchPreCopy(b, size.n, 64<<10) })
	}
}

func benchPreCopy(b *testing.B, size, deltaSize int) {
	src, delta := bigPattern(size), bigPattern(deltaSize)
	dst := make([]byte, size)
	write := func(p []byte) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(p); return err }
	}
	read := func(r io.Reader) error { _, err := io.ReadFull(r, dst); return err }
	readDelta := func(r io.Reader) error { _, err := io.ReadFull(r, dst[:deltaSize]); return err }
	part := func(capture func(io.Writer) error, restore func(io.Reader) error) Participant {
		return Participant{Name: "payload", Capture: capture, Restore: restore, Reset: func() {},
			PreCopy: &PreCopy{Want: func() bool { return true }, Capture: capture, Delta: write(delta), Stop: func() {},
				Restore: restore, RestoreDelta: readDelta}}
	}
	sender := newRegistryWith(b, part(write(src), func(io.Reader) error { return nil }))
	receiver := newRegistryWith(b, part(func(io.Writer) error { return nil }, read))
	accepts := receiver.Accepts()
	ctx := context.Background()
	old, new := socketPair(b)
	// round moves one snapshot: send on a goroutine (the stream blocks
	// until read), receive here.
	round := func(send func() (int64, error), receive func() (Info, error)) {
		done := goSend(send)
		_, err := receive()
		if res := <-done; err == nil {
			err = res.err
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	firstRound := func() {
		round(func() (int64, error) { return SendPreCopy(ctx, old, sender, accepts, []string{"payload"}) },
			func() (Info, error) { return ReceivePreCopy(ctx, new, receiver) })
	}
	secondRound := func() {
		round(func() (int64, error) { return SendFor(ctx, old, sender, accepts) },
			func() (Info, error) { return Receive(ctx, new, receiver) })
	}
	copy(dst, src) // fault the pages in
	b.Run("one-round", func(b *testing.B) {
		b.SetBytes(int64(size))
		for b.Loop() {
			round(func() (int64, error) { return SendFor(ctx, old, sender, accepts) },
				func() (Info, error) { return Receive(ctx, new, receiver) })
		}
	})
	b.Run("first-round", func(b *testing.B) {
		b.SetBytes(int64(size))
		for b.Loop() {
			firstRound()
			b.StopTimer()
			secondRound()
			b.StartTimer()
		}
	})
	b.Run("second-round", func(b *testing.B) {
		b.SetBytes(int64(deltaSize))
		for b.Loop() {
			b.StopTimer()
			firstRound()
			b.StartTimer()
			secondRound()
		}
	})
}
