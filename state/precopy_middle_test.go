//go:build unix

package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// middleRound writes a middle round of p's pre-copy into a buffer.
func (p *preCopyPair) middleRound(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := p.src.WritePreCopyDelta(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WritePreCopyDelta = %d, %v; wrote %d bytes", n, err, buf.Len())
	}
	return buf.Bytes()
}

// sendRounds sends, from a goroutine, over conn, the first round of p's
// pre-copy, then middles middle rounds, then the last after Freeze,
// calling before(round) before round 2 and on (the last included). The
// result is the first round's size and the first error.
func (p *preCopyPair) sendRounds(t *testing.T, conn *net.UnixConn, middles int, before func(round int)) <-chan sendResult {
	t.Helper()
	accepts := p.dst.Accepts()
	sections, err := p.src.PreCopySections(accepts)
	if err != nil {
		t.Fatal(err)
	}
	return goSend(func() (int64, error) {
		n, err := SendPreCopy(context.Background(), conn, p.src, accepts, sections)
		for round := 2; round <= 1+middles && err == nil; round++ {
			before(round)
			_, err = SendPreCopyDelta(context.Background(), conn, p.src)
		}
		if err != nil {
			return n, err
		}
		before(2 + middles)
		if err := p.src.Freeze(context.Background()); err != nil {
			return n, err
		}
		_, err = SendFor(context.Background(), conn, p.src, accepts)
		return n, err
	})
}

// checkUndone fails t unless the new process's kv had every round undone
// once, and DiscardPreCopy has nothing left to undo.
func (p *preCopyPair) checkUndone(t *testing.T) {
	t.Helper()
	if p.dstKV.resets != 1 || len(p.dstKV.m) != 0 {
		t.Errorf("kv reset %d times, holds %d entries; want every round undone", p.dstKV.resets, len(p.dstKV.m))
	}
	// The rounds are over: nothing is left to match.
	if err := p.dst.DiscardPreCopy(); err != nil || p.dstKV.resets != 1 {
		t.Errorf("DiscardPreCopy afterwards = %v, resets %d", err, p.dstKV.resets)
	}
}

// TestPreCopyMiddleRounds: a map that changes before, during and between
// middle rounds arrives exactly as it was at the freeze, each middle round
// holding only what changed during the round before (as deltas, flagged
// pre-copy and deltas), over buffers and the real transport.
func TestPreCopyMiddleRounds(t *testing.T) {
	change := func(p *preCopyPair, round int) {
		for i := range 20 {
			p.srcKV.set(fmt.Sprintf("key-%06d", round*100+i), fmt.Sprint("changed in round ", round))
		}
		p.srcKV.del(fmt.Sprintf("key-%06d", round*100+50))
		p.srcKV.set(fmt.Sprint("new-in-", round), "added")
	}
	t.Run("buffers", func(t *testing.T) {
		p := newPreCopyPair(t, 2000)
		p.srcKV.churn()
		first := p.firstRound(t)
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(first)); err != nil {
			t.Fatal(err)
		}
		for round := 1; round <= 3; round++ {
			change(p, round)
			mid := p.middleRound(t)
			if !p.srcKV.tracking {
				t.Fatalf("round %d: a middle round ended the tracking", round)
			}
			info, err := p.dst.ReadPreCopy(bytes.NewReader(mid))
			if err != nil {
				t.Fatalf("round %d: ReadPreCopy of a middle round: %v", round, err)
			}
			if len(info.Sections) != 1 || !info.Sections[0].Delta || info.Sections[0].Name != "kv" {
				t.Fatalf("round %d: sections %+v, want kv as a delta", round, info.Sections)
			}
			// Round 1 holds the churn of the copy too; the later ones
			// only the 22 keys that the round changed.
			if d := info.Sections[0].Bytes; round > 1 && d > 2000 {
				t.Errorf("round %d: the delta is %d bytes, the first round %d: not what changed in the round only", round, d, len(first))
			}
		}
		change(p, 4)
		if _, err := p.dst.ReadSnapshot(bytes.NewReader(p.secondRound(t))); err != nil {
			t.Fatalf("the last round: %v", err)
		}
		assertSameMap(t, "restored map", p.dstKV.m, p.srcKV.m)
		if got := p.dstKV.called("PreCopy.RestoreDelta"); got != 4 {
			t.Errorf("RestoreDelta called %d times, want 4 (3 middle rounds and the last)", got)
		}
		if p.srcKV.tracking || p.srcKV.called("PreCopy.Stop") != 0 {
			t.Errorf("old kv: tracking %v, Stop called %d times", p.srcKV.tracking, p.srcKV.called("PreCopy.Stop"))
		}
	})
	t.Run("transport", func(t *testing.T) {
		p := newPreCopyPair(t, 40000)
		old, new := socketPair(t)
		sent := p.sendRounds(t, old, 2, func(round int) { change(p, round) })
		for round := range 3 {
			if _, err := ReceivePreCopy(context.Background(), new, p.dst); err != nil {
				t.Fatalf("ReceivePreCopy of round %d: %v", round+1, err)
			}
		}
		_, err := Receive(context.Background(), new, p.dst)
		if res := <-sent; err != nil || res.err != nil {
			t.Fatalf("Receive = %v; send = %v", err, res.err)
		}
		assertSameMap(t, "restored map", p.dstKV.m, p.srcKV.m)
	})
}

// TestPreCopyMiddleRoundFailures: a middle round is refused without a
// first round, once frozen, and after one that failed (whose failure
// leaves only StopPreCopy, the last round refused too); in the new
// process, a middle round that fails (damaged, its RestoreDelta failing or
// panicking, a section sent whole, one missing) or one without a first
// round undoes every round so far, and Reset undoes all of them.
func TestPreCopyMiddleRoundFailures(t *testing.T) {
	t.Run("writer", func(t *testing.T) {
		p := newPreCopyPair(t, 20)
		if _, err := p.src.WritePreCopyDelta(io.Discard); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("a middle round without a first: %v", err)
		}
		p.firstRound(t)
		if err := p.src.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := p.src.WritePreCopyDelta(io.Discard); !errors.Is(err, ErrPreCopy) || !strings.Contains(err.Error(), "frozen") {
			t.Fatalf("a middle round once frozen: %v", err)
		}
		if err := p.src.Thaw(); err != nil {
			t.Fatal(err)
		}
		p.srcKV.failIn = "PreCopy.Delta"
		if _, err := p.src.WritePreCopyDelta(io.Discard); err == nil {
			t.Fatal("a middle round whose Delta fails succeeded")
		}
		p.srcKV.failIn = ""
		if _, err := p.src.WritePreCopyDelta(io.Discard); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("a middle round after one that failed: %v", err)
		}
		if _, err := p.src.WriteSnapshotFor(io.Discard, p.dst.Accepts()); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("the last round after a middle one that failed: %v", err)
		}
		if err := p.src.StopPreCopy(); err != nil || p.srcKV.called("PreCopy.Stop") != 1 || p.srcKV.tracking {
			t.Fatalf("StopPreCopy = %v, Stop called %d times, tracking %v", err, p.srcKV.called("PreCopy.Stop"), p.srcKV.tracking)
		}
		// A new upgrade starts afresh.
		p.firstRound(t)
		p.middleRound(t)
	})
	t.Run("middle round without a first", func(t *testing.T) {
		p := newPreCopyPair(t, 20)
		p.firstRound(t)
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.middleRound(t))); !errors.Is(err, ErrPreCopy) || !strings.Contains(err.Error(), "no first round") {
			t.Fatalf("ReadPreCopy of a middle round alone = %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		// bad returns the failing middle round, after the good one.
		bad func(t *testing.T, p *preCopyPair) []byte
		// want is what the error says.
		want string
	}{
		{"damaged", func(t *testing.T, p *preCopyPair) []byte {
			b := p.middleRound(t)
			b[len(b)-30] ^= 0x40
			return b
		}, "corrupt"},
		{"truncated", func(t *testing.T, p *preCopyPair) []byte {
			b := p.middleRound(t)
			return b[:len(b)/2]
		}, "truncated"},
		{"header cut", func(t *testing.T, p *preCopyPair) []byte { return p.middleRound(t)[:5] }, "truncated"},
		{"RestoreDelta fails", func(t *testing.T, p *preCopyPair) []byte {
			p.dstKV.failIn = "PreCopy.RestoreDelta"
			return p.middleRound(t)
		}, "fails"},
		{"RestoreDelta panics", func(t *testing.T, p *preCopyPair) []byte {
			p.dstKV.panicIn = "PreCopy.RestoreDelta"
			return p.middleRound(t)
		}, "panic"},
		{"a whole snapshot", func(t *testing.T, p *preCopyPair) []byte { return snapshotOf(t, p.src) }, "not the first or a middle round"},
		{"a first round again", func(t *testing.T, p *preCopyPair) []byte {
			p.src.StopPreCopy()
			return p.firstRound(t)
		}, "restored already"},
		{"a section the first round did not restore", func(t *testing.T, p *preCopyPair) []byte {
			// A writer whose kv has no first round: its middle round
			// holds the other section only.
			other := newToyMap("other", 3)
			src := newRegistryWith(t, other.participant())
			if _, err := src.WritePreCopy(io.Discard, src.Accepts(), []string{"other"}); err != nil {
				t.Fatal(err)
			}
			if err := p.dst.Register(newToyMap("other", 0).participant()); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := src.WritePreCopyDelta(&buf); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}, "delta for section \"other\", which no first round restored"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPreCopyPair(t, 200)
			if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.firstRound(t))); err != nil {
				t.Fatal(err)
			}
			p.srcKV.set("key-000001", "changed")
			if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.middleRound(t))); err != nil {
				t.Fatalf("the good middle round: %v", err)
			}
			p.srcKV.set("key-000002", "changed again")
			var err error
			noPanic(t, tt.name, func() { _, err = p.dst.ReadPreCopy(bytes.NewReader(tt.bad(t, p))) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadPreCopy = %v, want an error saying %q", err, tt.want)
			}
			p.checkUndone(t)
		})
	}
	t.Run("discard after middle rounds", func(t *testing.T) {
		p := newPreCopyPair(t, 200)
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.firstRound(t))); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			p.srcKV.set("key-000003", "changed")
			if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.middleRound(t))); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.dst.DiscardPreCopy(); err != nil || p.dstKV.resets != 1 || len(p.dstKV.m) != 0 {
			t.Fatalf("DiscardPreCopy = %v: kv reset %d times, %d entries", err, p.dstKV.resets, len(p.dstKV.m))
		}
		// The new process can take a whole snapshot now.
		if _, err := p.dst.ReadSnapshot(bytes.NewReader(snapshotOf(t, p.src))); err != nil {
			t.Fatal(err)
		}
		assertSameMap(t, "restored map", p.dstKV.m, p.srcKV.m)
	})
}
