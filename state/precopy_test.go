//go:build unix

package state

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
)

// preCopyPair is the old process's registry and the new one's, each with a
// toy map "kv" (two rounds) and a blob "plain" (one round) before it.
type preCopyPair struct {
	src, dst       *Registry
	srcKV, dstKV   *toyMap
	srcBlob, dstBl *blob
}

func newPreCopyPair(t *testing.T, entries int) *preCopyPair {
	t.Helper()
	p := &preCopyPair{
		srcKV: newToyMap("kv", entries), dstKV: newToyMap("kv", 0),
		srcBlob: &blob{name: "plain", data: []byte("one round")}, dstBl: &blob{name: "plain"},
	}
	p.src, p.dst = quietRegistry(t), quietRegistry(t)
	for _, r := range []struct {
		reg *Registry
		ps  []Participant
	}{{p.src, []Participant{p.srcBlob.participant(), p.srcKV.participant()}}, {p.dst, []Participant{p.dstBl.participant(), p.dstKV.participant()}}} {
		for _, part := range r.ps {
			if err := r.reg.Register(part); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// quietRegistry returns a registry that logs nothing: the panics of the
// tests are expected.
func quietRegistry(t *testing.T) *Registry {
	t.Helper()
	return newRegistry(t, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// firstRound writes the first round for dst into a buffer, checking that
// it holds "kv".
func (p *preCopyPair) firstRound(t *testing.T) []byte {
	t.Helper()
	sections, err := p.src.PreCopySections(p.dst.Accepts())
	if err != nil || !slices.Equal(sections, []string{"kv"}) {
		t.Fatalf("PreCopySections = %v, %v; want [kv]", sections, err)
	}
	var buf bytes.Buffer
	n, err := p.src.WritePreCopy(&buf, p.dst.Accepts(), sections)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WritePreCopy = %d, %v; wrote %d bytes", n, err, buf.Len())
	}
	return buf.Bytes()
}

// secondRound freezes src and writes the second round for dst.
func (p *preCopyPair) secondRound(t *testing.T) []byte {
	t.Helper()
	if err := p.src.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := p.src.WriteSnapshotFor(&buf, p.dst.Accepts()); err != nil {
		t.Fatalf("WriteSnapshotFor (second round): %v", err)
	}
	return buf.Bytes()
}

// TestPreCopyRoundTrip: a map that keeps changing while its first round is
// captured (keys added, changed before and after they are copied, deleted)
// and after it, until the freeze, arrives in the new process exactly as it
// was at the freeze; the first round went by PreCopy.Capture and Restore,
// the second holds only what changed (Delta, RestoreDelta), and a section
// without PreCopy goes whole in the second round as before. Over the real
// transport too, by memfd (small) and stream (large).
func TestPreCopyRoundTrip(t *testing.T) {
	check := func(t *testing.T, p *preCopyPair, first, second Info) {
		t.Helper()
		assertSameMap(t, "restored map", p.dstKV.m, p.srcKV.m)
		if string(p.dstBl.got) != "one round" {
			t.Errorf("plain restored %q", p.dstBl.got)
		}
		if want := []Section{{Name: "kv", Version: 1, Bytes: first.Sections[0].Bytes}}; !slices.Equal(first.Sections, want) {
			t.Errorf("first round sections %+v, want %+v", first.Sections, want)
		}
		if len(second.Sections) != 2 || second.Sections[0].Delta || !second.Sections[1].Delta || second.Sections[1].Name != "kv" {
			t.Errorf("second round sections %+v, want plain whole and kv as a delta", second.Sections)
		}
		if d, f := second.Sections[1].Bytes, first.Sections[0].Bytes; d*5 > f {
			t.Errorf("the delta is %d bytes, the first round %d: not what changed only", d, f)
		}
		for cb, want := range map[string]int{"PreCopy.Restore": 1, "PreCopy.RestoreDelta": 1, "Restore": 0, "Reset": 0} {
			if got := p.dstKV.called(cb); got != want {
				t.Errorf("new kv: %s called %d times, want %d (calls %v)", cb, got, want, p.dstKV.calls)
			}
		}
		for cb, want := range map[string]int{"PreCopy.Capture": 1, "PreCopy.Delta": 1, "Capture": 0, "PreCopy.Stop": 0} {
			if got := p.srcKV.called(cb); got != want {
				t.Errorf("old kv: %s called %d times, want %d", cb, got, want)
			}
		}
		if p.srcKV.tracking {
			t.Error("old kv still tracks after its Delta")
		}
		if err := p.src.StopPreCopy(); err != nil || p.srcKV.called("PreCopy.Stop") != 0 {
			t.Errorf("StopPreCopy after the second round: %v, Stop called %d times", err, p.srcKV.called("PreCopy.Stop"))
		}
	}
	t.Run("buffers", func(t *testing.T) {
		p := newPreCopyPair(t, 2000)
		p.srcKV.churn()
		first := p.firstRound(t)
		// It runs on between the rounds.
		p.srcKV.set("key-000100", "changed between the rounds")
		p.srcKV.del("key-000200")
		p.srcKV.set("late", "added between the rounds")
		finfo, err := p.dst.ReadPreCopy(bytes.NewReader(first))
		if err != nil {
			t.Fatalf("ReadPreCopy: %v", err)
		}
		if len(p.dstKV.m) == 0 || p.dstBl.restored != 0 {
			t.Fatalf("after the first round: %d entries, plain restored %d times", len(p.dstKV.m), p.dstBl.restored)
		}
		sinfo, err := p.dst.ReadSnapshot(bytes.NewReader(p.secondRound(t)))
		if err != nil {
			t.Fatalf("ReadSnapshot (second round): %v", err)
		}
		check(t, p, finfo, sinfo)
	})
	for _, tt := range []struct {
		name    string
		entries int
	}{{"memfd", 500}, {"stream", 40000}} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPreCopyPair(t, tt.entries)
			p.srcKV.churn()
			old, new := socketPair(t)
			sent := p.sendRounds(t, old, 0, func(int) { p.srcKV.set("late", "between the rounds") })
			finfo, err := ReceivePreCopy(context.Background(), new, p.dst)
			if err != nil {
				t.Fatalf("ReceivePreCopy: %v", err)
			}
			if tt.name == "stream" && finfo.Bytes <= int64(memfdMax) {
				t.Fatalf("the first round is %d bytes: too small to stream", finfo.Bytes)
			}
			sinfo, err := Receive(context.Background(), new, p.dst)
			if res := <-sent; err != nil || res.err != nil {
				t.Fatalf("Receive = %v; send = %v", err, res.err)
			} else if res.n != finfo.Bytes {
				t.Errorf("SendPreCopy sent %d bytes, ReceivePreCopy read %d", res.n, finfo.Bytes)
			}
			check(t, p, finfo, sinfo)
		})
	}
}

// TestPreCopyRoundsMismatch: the reader refuses a second round that does
// not match its first, and undoes what it restored: a delta for a section
// no first round restored, a pre-restored section missing from the second
// round or sent whole in it, a first round read as a whole snapshot, a
// whole snapshot read as a first round, and a second first round.
func TestPreCopyRoundsMismatch(t *testing.T) {
	t.Run("delta without a first round", func(t *testing.T) {
		p := newPreCopyPair(t, 50)
		p.firstRound(t) // sent to a reader that is gone
		_, err := p.dst.ReadSnapshot(bytes.NewReader(p.secondRound(t)))
		if !errors.Is(err, ErrPreCopy) || !strings.Contains(err.Error(), "no first round restored") {
			t.Fatalf("ReadSnapshot = %v, want ErrPreCopy for a delta without a first round", err)
		}
		if p.dstBl.restored != 2 || len(p.dstBl.got) != 0 {
			// Restored, then undone by restoring its state from before.
			t.Errorf("plain: restored %d times, holds %q; want its restore undone", p.dstBl.restored, p.dstBl.got)
		}
	})
	for _, tt := range []struct {
		name   string
		second func(t *testing.T, p *preCopyPair) []byte
		want   string
	}{
		{"pre-restored section missing", func(t *testing.T, p *preCopyPair) []byte {
			return snapshotOf(t, newRegistryWith(t, (&blob{name: "plain", data: []byte("x")}).participant()))
		}, "missing from a later one"},
		{"pre-restored section whole", func(t *testing.T, p *preCopyPair) []byte {
			return snapshotOf(t, p.src) // for any reader: every section whole
		}, "comes whole in the second"},
		{"a first round again", func(t *testing.T, p *preCopyPair) []byte {
			p.src.StopPreCopy()
			return p.firstRound(t)
		}, "round of a pre-copy handoff"},
		{"truncated second round", func(t *testing.T, p *preCopyPair) []byte {
			b := p.secondRound(t)
			return b[:len(b)-20]
		}, "truncated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPreCopyPair(t, 50)
			if _, err := p.dst.ReadPreCopy(bytes.NewReader(p.firstRound(t))); err != nil {
				t.Fatal(err)
			}
			second := tt.second(t, p)
			p.src.StopPreCopy()
			_, err := p.dst.ReadSnapshot(bytes.NewReader(second))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadSnapshot = %v, want an error saying %q", err, tt.want)
			}
			if tt.name != "truncated second round" && !errors.Is(err, ErrPreCopy) {
				t.Errorf("ReadSnapshot = %v, want ErrPreCopy", err)
			}
			p.checkUndone(t)
		})
	}
	t.Run("whole snapshot as a first round", func(t *testing.T) {
		p := newPreCopyPair(t, 5)
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(snapshotOf(t, p.src))); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("ReadPreCopy of a whole snapshot = %v, want ErrPreCopy", err)
		}
	})
	t.Run("two first rounds", func(t *testing.T) {
		p := newPreCopyPair(t, 5)
		first := p.firstRound(t)
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(first)); err != nil {
			t.Fatal(err)
		}
		if _, err := p.dst.ReadPreCopy(bytes.NewReader(first)); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("a second ReadPreCopy = %v, want ErrPreCopy", err)
		}
		if _, err := p.src.WritePreCopy(io.Discard, p.dst.Accepts(), []string{"kv"}); !errors.Is(err, ErrPreCopy) {
			t.Fatalf("a second WritePreCopy = %v, want ErrPreCopy", err)
		}
	})
}

// TestPreCopyResetOnFailure: the two rounds are one restore. A failure in
// the first undoes the first; one in the second (a later section's Restore,
// a RestoreDelta) undoes both, the pre-restored participants included; and
// DiscardPreCopy, for a second round that never comes, undoes the first.
func TestPreCopyResetOnFailure(t *testing.T) {
	newPair := func(t *testing.T) (src, dst *Registry, s1, s2, d1, d2 *toyMap) {
		s1, s2, d1, d2 = newToyMap("a", 30), newToyMap("b", 30), newToyMap("a", 0), newToyMap("b", 0)
		return newRegistryWith(t, s1.participant(), s2.participant()), newRegistryWith(t, d1.participant(), d2.participant()), s1, s2, d1, d2
	}
	rounds := func(t *testing.T, src, dst *Registry) (first, second []byte) {
		var b1, b2 bytes.Buffer
		if _, err := src.WritePreCopy(&b1, dst.Accepts(), []string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.WriteSnapshotFor(&b2, dst.Accepts()); err != nil {
			t.Fatal(err)
		}
		return b1.Bytes(), b2.Bytes()
	}
	t.Run("first round", func(t *testing.T) {
		src, dst, _, _, d1, d2 := newPair(t)
		first, second := rounds(t, src, dst)
		d2.failIn = "PreCopy.Restore"
		if _, err := dst.ReadPreCopy(bytes.NewReader(first)); err == nil || !strings.Contains(err.Error(), "PreCopy.Restore of b fails") {
			t.Fatalf("ReadPreCopy = %v, want b's failure", err)
		}
		if d1.resets != 1 || d2.resets != 1 || len(d1.m) != 0 {
			t.Errorf("resets a %d, b %d (a holds %d entries), want both undone once", d1.resets, d2.resets, len(d1.m))
		}
		// Nothing of the first round is left: its second round is refused.
		if _, err := dst.ReadSnapshot(bytes.NewReader(second)); !errors.Is(err, ErrPreCopy) {
			t.Errorf("the second round after a failed first = %v, want ErrPreCopy", err)
		}
	})
	for _, failIn := range []string{"PreCopy.RestoreDelta", "corrupt"} {
		t.Run("second round "+failIn, func(t *testing.T) {
			src, dst, _, _, d1, d2 := newPair(t)
			first, second := rounds(t, src, dst)
			if _, err := dst.ReadPreCopy(bytes.NewReader(first)); err != nil {
				t.Fatal(err)
			}
			if failIn == "corrupt" {
				second[len(second)-30] ^= 0xff // in b's delta
			} else {
				d2.failIn = failIn
			}
			if _, err := dst.ReadSnapshot(bytes.NewReader(second)); err == nil {
				t.Fatal("ReadSnapshot succeeded")
			}
			if d1.resets != 1 || d2.resets != 1 || len(d1.m)+len(d2.m) != 0 {
				t.Errorf("resets a %d, b %d, entries %d and %d: want both rounds undone", d1.resets, d2.resets, len(d1.m), len(d2.m))
			}
		})
	}
	t.Run("discard", func(t *testing.T) {
		src, dst, _, _, d1, d2 := newPair(t)
		first, _ := rounds(t, src, dst)
		if _, err := dst.ReadPreCopy(bytes.NewReader(first)); err != nil {
			t.Fatal(err)
		}
		if err := dst.DiscardPreCopy(); err != nil {
			t.Fatal(err)
		}
		if d1.resets != 1 || d2.resets != 1 || len(d1.m) != 0 {
			t.Errorf("DiscardPreCopy: resets %d and %d, want both undone", d1.resets, d2.resets)
		}
		if err := dst.DiscardPreCopy(); err != nil || d1.resets != 1 {
			t.Errorf("a second DiscardPreCopy = %v, resets %d: want nothing", err, d1.resets)
		}
		// A whole snapshot restores as ever now.
		if _, err := dst.ReadSnapshot(bytes.NewReader(snapshotOf(t, src))); err != nil {
			t.Errorf("ReadSnapshot after DiscardPreCopy: %v", err)
		}
	})
	t.Run("undo without Reset", func(t *testing.T) {
		// A participant without Reset is put back by its state from
		// before the first round, captured then.
		s, d := newToyMap("a", 10), newToyMap("a", 0)
		d.m["initial"] = "state"
		dp := d.participant()
		dp.Reset = nil
		src, dst := newRegistryWith(t, s.participant()), newRegistryWith(t, dp)
		var b bytes.Buffer
		if _, err := src.WritePreCopy(&b, dst.Accepts(), []string{"a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.ReadPreCopy(&b); err != nil || len(d.m) != 10 {
			t.Fatalf("ReadPreCopy = %v, %d entries", err, len(d.m))
		}
		if err := dst.DiscardPreCopy(); err != nil {
			t.Fatal(err)
		}
		assertSameMap(t, "after the undo", d.m, map[string]string{"initial": "state"})
	})
}

// TestPreCopyStop: the old process ends the tracking with Stop when the
// second round does not come: after a first round, after one that failed
// half-way (every participant whose Capture was called, the failing one
// included), and after a second round that failed before a Delta. Stop is
// not called twice, nor after a Delta.
func TestPreCopyStop(t *testing.T) {
	t.Run("after the first round", func(t *testing.T) {
		p := newPreCopyPair(t, 10)
		p.firstRound(t)
		if err := p.src.StopPreCopy(); err != nil {
			t.Fatal(err)
		}
		if n := p.srcKV.called("PreCopy.Stop"); n != 1 || p.srcKV.tracking {
			t.Fatalf("Stop called %d times, tracking %v", n, p.srcKV.tracking)
		}
		p.src.StopPreCopy()
		if n := p.srcKV.called("PreCopy.Stop"); n != 1 {
			t.Fatalf("Stop called %d times after a second StopPreCopy", n)
		}
		// The next attempt starts a first round afresh; a snapshot
		// without one has no deltas.
		if _, err := p.src.WriteSnapshotFor(io.Discard, p.dst.Accepts()); err != nil || p.srcKV.called("PreCopy.Delta") != 0 {
			t.Fatalf("WriteSnapshotFor after Stop = %v, Delta called %d times", err, p.srcKV.called("PreCopy.Delta"))
		}
	})
	t.Run("first round failed", func(t *testing.T) {
		a, b, c := newToyMap("a", 5), newToyMap("b", 5), newToyMap("c", 5)
		b.failIn = "PreCopy.Capture"
		src := newRegistryWith(t, a.participant(), b.participant(), c.participant())
		if _, err := src.WritePreCopy(io.Discard, src.Accepts(), []string{"a", "b", "c"}); err == nil || !strings.Contains(err.Error(), `"b"`) {
			t.Fatalf("WritePreCopy = %v, want b's failure", err)
		}
		src.StopPreCopy()
		for _, m := range []*toyMap{a, b} {
			if m.called("PreCopy.Stop") != 1 {
				t.Errorf("%s: Stop called %d times, want 1", m.name, m.called("PreCopy.Stop"))
			}
		}
		if c.called("PreCopy.Capture")+c.called("PreCopy.Stop") != 0 {
			t.Errorf("c, never captured: calls %v", c.calls)
		}
	})
	t.Run("second round failed", func(t *testing.T) {
		a, b := newToyMap("a", 5), newToyMap("b", 5)
		plain := &blob{name: "plain", data: []byte("x")}
		pp := plain.participant()
		pp.Capture = func(io.Writer) error { return errors.New("no capture today") }
		src := newRegistryWith(t, a.participant(), pp, b.participant())
		if _, err := src.WritePreCopy(io.Discard, src.Accepts(), []string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.WriteSnapshotFor(io.Discard, src.Accepts()); err == nil {
			t.Fatal("WriteSnapshotFor succeeded")
		}
		src.StopPreCopy()
		if a.called("PreCopy.Delta") != 1 || a.called("PreCopy.Stop") != 0 || b.called("PreCopy.Delta") != 0 || b.called("PreCopy.Stop") != 1 {
			t.Errorf("a: %v; b: %v; want a's Delta, then b's Stop", a.calls, b.calls)
		}
	})
}

// TestPreCopyOneRound: no first round where it is not worth it or not
// possible: a participant whose Want says no, a reader whose participant
// has no PreCopy (an older release among them), a reader that needs a
// migration (a rollback: the section goes whole in the second round,
// migrated, as without PreCopy), a participant without PreCopy. And a
// section that cannot go in a first round is refused by WritePreCopy.
func TestPreCopyOneRound(t *testing.T) {
	kv := newToyMap("kv", 10)
	src := newRegistryWith(t, kv.participant(), (&blob{name: "plain"}).participant())
	reader := func(kvVersion uint32, precopy bool) Accepts {
		a := src.Accepts()
		a.Sections["kv"] = []uint32{kvVersion}
		if !precopy {
			a.PreCopy = nil
		}
		return a
	}
	for _, tt := range []struct {
		name string
		a    Accepts
		want bool
	}{
		{"wanted", reader(1, true), true},
		{"Want says no", reader(1, true), false},
		{"reader without PreCopy", reader(1, false), true},
		{"reader needs a migration", reader(0, true), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv.want = tt.want
			got, err := src.PreCopySections(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			wantKV := tt.name == "wanted"
			if (len(got) == 1) != wantKV || len(got) > 1 {
				t.Fatalf("PreCopySections = %v, want kv: %v", got, wantKV)
			}
			if !wantKV && tt.want {
				// Not for lack of wanting: this reader cannot take it.
				if _, err := src.WritePreCopy(io.Discard, tt.a, []string{"kv"}); !errors.Is(err, ErrPreCopy) {
					t.Errorf("WritePreCopy of kv for this reader = %v, want ErrPreCopy", err)
				}
			}
		})
	}
	if _, err := src.WritePreCopy(io.Discard, src.Accepts(), []string{"plain"}); !errors.Is(err, ErrPreCopy) {
		t.Errorf("WritePreCopy of a section without PreCopy = %v, want ErrPreCopy", err)
	}
	if _, err := src.WritePreCopy(io.Discard, src.Accepts(), []string{"nope"}); !errors.Is(err, ErrPreCopy) {
		t.Errorf("WritePreCopy of an unknown section = %v, want ErrPreCopy", err)
	}
	if n := kv.called("PreCopy.Capture"); n != 0 {
		t.Errorf("PreCopy.Capture called %d times", n)
	}

	t.Run("rollback", func(t *testing.T) {
		// Release 2 hands over to release 1, which reads kv at version 1
		// only: kv goes whole in one round, migrated down.
		kv2 := newToyMap("kv", 3)
		kv2.version = 2
		newer := newRegistryWith(t, kv2.participant())
		if err := newer.AddMigration("kv", 2, 1, func(b []byte) ([]byte, error) { return b, nil }); err != nil {
			t.Fatal(err)
		}
		old := newToyMap("kv", 0)
		older := newRegistryWith(t, old.participant())
		got, err := newer.PreCopySections(older.Accepts())
		if err != nil || len(got) != 0 {
			t.Fatalf("PreCopySections for an older reader = %v, %v; want none", got, err)
		}
		var buf bytes.Buffer
		if _, err := newer.WriteSnapshotFor(&buf, older.Accepts()); err != nil {
			t.Fatal(err)
		}
		info, err := older.ReadSnapshot(&buf)
		if err != nil || info.Sections[0].Delta || info.Sections[0].Version != 1 {
			t.Fatalf("ReadSnapshot = %+v, %v; want kv whole at version 1", info, err)
		}
		assertSameMap(t, "rolled back", old.m, kv2.m)
	})
}

// TestPreCopyRegister: a PreCopy must have all six functions.
func TestPreCopyRegister(t *testing.T) {
	full := newToyMap("kv", 0).participant()
	for _, drop := range []string{"Want", "Capture", "Delta", "Stop", "Restore", "RestoreDelta"} {
		p := full
		pc := *full.PreCopy
		switch drop {
		case "Want":
			pc.Want = nil
		case "Capture":
			pc.Capture = nil
		case "Delta":
			pc.Delta = nil
		case "Stop":
			pc.Stop = nil
		case "Restore":
			pc.Restore = nil
		case "RestoreDelta":
			pc.RestoreDelta = nil
		}
		p.PreCopy = &pc
		err := newRegistry(t, Options{}).Register(p)
		if !errors.Is(err, ErrInvalidParticipant) || !strings.Contains(err.Error(), drop) {
			t.Errorf("Register without PreCopy.%s = %v, want ErrInvalidParticipant naming it", drop, err)
		}
	}
	if err := newRegistry(t, Options{}).Register(full); err != nil {
		t.Errorf("Register with a full PreCopy: %v", err)
	}
}

// TestPreCopyPanics: a panic in any PreCopy hook comes back as a
// *PanicError naming the participant and the hook; the rounds fail as they
// would on an error, the restore is undone, and the other Stops are called.
func TestPreCopyPanics(t *testing.T) {
	for _, cb := range []string{"PreCopy.Want", "PreCopy.Capture", "PreCopy.Delta", "PreCopy.Stop", "PreCopy.Restore", "PreCopy.RestoreDelta"} {
		t.Run(cb, func(t *testing.T) {
			p := newPreCopyPair(t, 20)
			other := newToyMap("other", 3)
			if err := p.src.Register(other.participant()); err != nil {
				t.Fatal(err)
			}
			if err := p.dst.Register(newToyMap("other", 0).participant()); err != nil {
				t.Fatal(err)
			}
			var err error
			switch cb {
			case "PreCopy.Want", "PreCopy.Capture", "PreCopy.Delta", "PreCopy.Stop":
				p.srcKV.panicIn = cb
			default:
				p.dstKV.panicIn = cb
			}
			noPanic(t, cb, func() {
				var sections []string
				if sections, err = p.src.PreCopySections(p.dst.Accepts()); err != nil {
					return
				}
				var b1, b2 bytes.Buffer
				if _, err = p.src.WritePreCopy(&b1, p.dst.Accepts(), sections); err != nil {
					return
				}
				if cb == "PreCopy.Stop" {
					err = p.src.StopPreCopy()
					return
				}
				if _, err = p.src.WriteSnapshotFor(&b2, p.dst.Accepts()); err != nil {
					return
				}
				if _, err = p.dst.ReadPreCopy(&b1); err != nil {
					return
				}
				_, err = p.dst.ReadSnapshot(&b2)
			})
			if !isPanic(err, "kv", cb) {
				t.Fatalf("err = %v, want the *PanicError of kv in %s", err, cb)
			}
			switch cb {
			case "PreCopy.Stop":
				if other.called("PreCopy.Stop") != 1 {
					t.Errorf("the other participant's Stop was not called after kv's panicked")
				}
			case "PreCopy.Restore", "PreCopy.RestoreDelta":
				if p.dstKV.resets != 1 || len(p.dstKV.m) != 0 {
					t.Errorf("kv reset %d times, %d entries left", p.dstKV.resets, len(p.dstKV.m))
				}
			}
		})
	}
}

// TestVerifyPreCopy: Verify reads both rounds without restoring anything.
func TestVerifyPreCopy(t *testing.T) {
	p := newPreCopyPair(t, 20)
	first := p.firstRound(t)
	second := p.secondRound(t)
	for name, b := range map[string][]byte{"first": first, "second": second} {
		info, err := p.dst.Verify(bytes.NewReader(b))
		if err != nil || info.Bytes != int64(len(b)) {
			t.Errorf("Verify(%s round) = %+v, %v", name, info, err)
		}
	}
	if len(p.dstKV.calls) != 0 {
		t.Errorf("Verify called %v", p.dstKV.calls)
	}
	if !maps.Equal(p.dstKV.m, map[string]string{}) {
		t.Errorf("Verify restored %d entries", len(p.dstKV.m))
	}
}
