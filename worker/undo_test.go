package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
)

// TestResetUndoesRestore: a snapshot whose worker section restores but
// whose next section fails is undone as a whole. The registry calls the
// supervisor's Reset, which must leave it as before the restore: no
// progress, no data task created, no orphan, zero totals; and a second
// try with a good snapshot restores everything.
func TestResetUndoesRestore(t *testing.T) {
	clk := newFakeClock()
	opts := Options{now: clk.Now}
	kind := Kind{Name: "k", Run: func(_ context.Context, r *Run) error { return r.Checkpoint([]byte("v")) }}
	registered := []Task{
		{ID: "a", Every: time.Second, Run: func(_ context.Context, r *Run) error { return r.Checkpoint([]byte("a")) }},
		{ID: "b", Every: time.Second, Paused: true, Run: nop},
	}
	// The old process: both registered tasks, a data task, an orphan
	// from the generation before.
	old, _ := newTest(t, opts)
	if err := old.RegisterKind(kind); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, old, registered[0], registered[1], Task{ID: "d", Kind: "k", Every: time.Second}, Task{ID: "gone", Every: time.Second, Run: nop})
	clk.Advance(2 * time.Second)
	stepAll(t, old, 10)
	snap := snapshotWith(t, old, false)
	bad := snapshotWith(t, old, true)

	next, _ := newTest(t, opts)
	if err := next.RegisterKind(kind); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, next, registered...)
	reg := registryWith(t, next, false)
	before := info(t, next, "a")
	if _, err := reg.ReadSnapshot(bytes.NewReader(bad)); err == nil {
		t.Fatal("the snapshot with a failing section restored")
	}
	st := next.Stats()
	if st.Tasks != 2 || st.Orphaned != 0 || st.RunsTotal != 0 || st.Handoff.Restored {
		t.Fatalf("after the undo: %+v", st)
	}
	a := info(t, next, "a")
	if a.Runs != 0 || a.StateBytes != 0 || a.Next.Sub(clk.Now()) != time.Second || a.Status != before.Status {
		t.Fatalf("task a after the undo: %+v (before: %+v)", a, before)
	}
	if b := info(t, next, "b"); b.Status != StatusPaused {
		t.Fatalf("task b after the undo: %+v", b)
	}
	if _, ok := next.Task("d"); ok {
		t.Fatal("data task d survived the undo")
	}
	// The undo is complete enough that the good snapshot now restores.
	if _, err := reg.ReadSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if a := info(t, next, "a"); a.Runs != 1 || a.StateBytes != 1 {
		t.Fatalf("task a after the restore: %+v", a)
	}
	if _, ok := next.Task("d"); !ok {
		t.Fatal("data task d not restored")
	}
	if st := next.Stats(); st.Orphaned != 1 {
		t.Fatalf("orphans after the restore: %d", st.Orphaned)
	}
}

// TestResetKeepsEarlierProgress: Reset undoes only the last Restore: a
// task that had progress before it (from an earlier Restore) gets that
// progress back, and a failed Restore leaves nothing to undo.
func TestResetKeepsEarlierProgress(t *testing.T) {
	clk := newFakeClock()
	opts := Options{now: clk.Now}
	tk := Task{ID: "a", Every: time.Second, Run: func(_ context.Context, r *Run) error { return r.Checkpoint([]byte{byte(r.Seq())}) }}
	old, _ := newTest(t, opts)
	mustAdd(t, old, tk)
	clk.Advance(time.Second)
	stepAll(t, old, 10)
	first := capture(t, old)
	clk.Advance(time.Second)
	stepAll(t, old, 10)
	second := capture(t, old)

	next, _ := newTest(t, opts)
	mustAdd(t, next, tk)
	if err := next.Restore(bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	want := info(t, next, "a")
	if err := next.Restore(bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	if got := info(t, next, "a"); got.Runs != 2 {
		t.Fatalf("after the second restore: %+v", got)
	}
	next.Reset()
	if got := info(t, next, "a"); got.Runs != want.Runs || got.StateBytes != want.StateBytes || !got.Next.Equal(want.Next) {
		t.Fatalf("after Reset: %+v, want %+v", got, want)
	}
	// A Restore that fails changes nothing, and Reset after it neither.
	if err := next.Restore(bytes.NewReader(second[:len(second)/2])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Restore(truncated) = %v", err)
	}
	next.Reset()
	if got := info(t, next, "a"); got.Runs != want.Runs {
		t.Fatalf("after a failed Restore and Reset: %+v, want %+v", got, want)
	}
}

// registryWith returns a registry with s and, after it, a participant
// whose Restore fails when its section says "fail".
func registryWith(t *testing.T, s *Supervisor, fail bool) *state.Registry {
	t.Helper()
	reg, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register(reg); err != nil {
		t.Fatal(err)
	}
	err = reg.Register(state.Participant{Name: "after", Version: 1,
		Capture: func(w io.Writer) error {
			if fail {
				_, err := io.WriteString(w, "fail")
				return err
			}
			return nil
		},
		Restore: func(r io.Reader) error {
			b, err := io.ReadAll(r)
			if err == nil && string(b) == "fail" {
				err = errors.New("this section does not restore")
			}
			return err
		},
		Reset: func() {},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// snapshotWith writes a registry snapshot of s, frozen, whose section
// after the worker's fails to restore when fail is set.
func snapshotWith(t *testing.T, s *Supervisor, fail bool) []byte {
	t.Helper()
	reg := registryWith(t, s, fail)
	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := reg.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	s.Thaw()
	return buf.Bytes()
}

// TestResetDropsRestoredPendingRuns: the cut-off runs of an overlap-allow
// task that a Restore gave it are gone after Reset, as everything else
// the Restore brought.
func TestResetDropsRestoredPendingRuns(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustAdd(t, s, Task{ID: "a", Every: time.Second, Overlap: OverlapAllow, MaxConcurrent: 3, Run: nop})
	snap := rawSnapshot(formatPending, record{id: "a", flags: flagPending | flagMaybeDup, runs: 3, pending: []uint64{4<<1 | 1, 5 << 1}})
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if a := info(t, s, "a"); a.Pending != 2 || a.Runs != 3 || s.Stats().MaybeDuplicated != 1 {
		t.Fatalf("after the restore: %+v, %d maybe duplicated", a, s.Stats().MaybeDuplicated)
	}
	s.Reset()
	if a := info(t, s, "a"); a.Pending != 0 || a.Runs != 0 || a.MaybeDuplicate {
		t.Fatalf("after Reset: %+v", a)
	}
	if st := s.Stats(); st.MaybeDuplicated != 0 {
		t.Fatalf("after Reset: %d maybe duplicated", st.MaybeDuplicated)
	}
	if len(s.multis) != 0 {
		t.Fatalf("after Reset: %d tasks with run state", len(s.multis))
	}
}
