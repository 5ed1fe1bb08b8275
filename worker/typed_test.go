package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// TestPeriodicRollsBackFailedRun checks that a failed or panicking run's
// changes to the typed state are discarded.
func TestPeriodicRollsBackFailedRun(t *testing.T) {
	type acc struct{ Sum, Calls int }
	clk := newFakeClock()
	s, _ := newTest(t, Options{InitialBackoff: time.Second, MaxBackoff: time.Second, now: clk.Now})
	var seen []acc
	mustAdd(t, s, Periodic("acc", time.Second, func(_ context.Context, a *acc) error {
		a.Calls++
		seen = append(seen, *a)
		a.Sum += 10
		switch a.Calls {
		case 2:
			return errors.New("fail after mutating")
		case 3:
			panic("panic after mutating")
		}
		return nil
	}))
	for range 4 {
		clk.Advance(time.Second)
		stepAll(t, s, 10)
	}
	// Runs 2 and 3 failed: each retry starts again from run 1's state.
	want := []acc{{0, 1}, {10, 2}, {10, 2}, {10, 2}}
	if len(seen) != len(want) {
		t.Fatalf("seen %v", seen)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("run %d saw %+v, want %+v (all %v)", i+1, seen[i], want[i], seen)
		}
	}
	if got := string(s.byID.get(s.all, "acc").state()); got != `{"Sum":10,"Calls":1}` {
		t.Fatalf("checkpoint %s", got)
	}
}

// binCursor encodes itself with MarshalBinary, which Periodic and Loop
// prefer over JSON.
type binCursor struct{ Off uint64 }

func (c *binCursor) MarshalBinary() ([]byte, error) { return binary.AppendUvarint(nil, c.Off), nil }
func (c *binCursor) UnmarshalBinary(b []byte) error {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return errors.New("bad cursor")
	}
	c.Off = v
	return nil
}

func TestLoopProgressAcrossRestore(t *testing.T) {
	clk := newFakeClock()
	a, _ := newTest(t, Options{InitialBackoff: time.Second, now: clk.Now})
	loop := func(stopAt uint64, resumed chan<- uint64) Task {
		return Loop("cursor", func(_ context.Context, p *Progress[binCursor]) error {
			resumed <- p.Value().Off
			for c := p.Value(); c.Off < stopAt; {
				c.Off++
				if err := p.Save(c); err != nil {
					return err
				}
			}
			if p.Run().Seq() == 1 {
				return errors.New("crash after saving")
			}
			return nil
		})
	}
	resumed := make(chan uint64, 4)
	mustAdd(t, a, loop(5, resumed))
	stepAll(t, a, 1)
	if got := <-resumed; got != 0 {
		t.Fatalf("first start at %d", got)
	}
	if got := a.byID.get(a.all, "cursor").state(); !bytes.Equal(got, []byte{5}) {
		t.Fatalf("binary checkpoint %v, want [5]", got)
	}
	snap := capture(t, a) // in backoff after the crash

	b, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, b, loop(9, resumed))
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	stepAll(t, b, 1)
	if got := <-resumed; got != 5 {
		t.Fatalf("resumed at %d after restore, want 5", got)
	}
	if ti := info(t, b, "cursor"); ti.Status != StatusDone || ti.Runs != 2 || ti.Failures != 1 {
		t.Fatalf("%+v", ti)
	}
}

func TestStatelessTypedTask(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	n := 0
	tk := Periodic("nostate", time.Second, func(context.Context, *struct{}) error { n++; return nil })
	mustAdd(t, s, tk)
	tk.ID = "nostate2" // the same Task value may be added under another ID
	mustAdd(t, s, tk)
	clk.Advance(time.Second)
	stepAll(t, s, 10)
	if n != 2 || s.byID.get(s.all, "nostate").state() != nil {
		t.Fatalf("runs %d, state %v", n, s.byID.get(s.all, "nostate").state())
	}
}
