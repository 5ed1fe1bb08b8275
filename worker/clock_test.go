package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// snapshotAt captures tasks from a supervisor on clk after each has run
// once (the failing one is in backoff), for a restore on another clock.
func snapshotAt(t *testing.T, clk *fakeClock, opts Options, tasks []Task) []byte {
	t.Helper()
	opts.now = clk.Now
	a, _ := newTest(t, opts)
	mustAdd(t, a, tasks...)
	clk.Advance(time.Second)
	stepAll(t, a, 10)
	if err := a.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	return capture(t, a)
}

// TestRestoreClampsDueTimes: the next process's wall clock is an hour
// behind the one that captured (or the snapshot's times are an hour
// ahead): no task may wait the hour; each runs within its interval, a
// task in backoff within MaxBackoff.
func TestRestoreClampsDueTimes(t *testing.T) {
	opts := Options{InitialBackoff: 2 * time.Second, MaxBackoff: 4 * time.Second}
	tasks := []Task{
		{ID: "every10", Every: 10 * time.Second, Run: nop},
		{ID: "catchup1", Every: time.Second, Policy: CatchUp, Run: nop},
		{ID: "failing", Every: time.Second, Run: func(context.Context, *Run) error { return errors.New("down") }},
	}
	clkA := newFakeClock()
	snap := snapshotAt(t, clkA, opts, tasks)

	clkB := &fakeClock{t: clkA.Now().Add(-time.Hour)}
	opts.now = clkB.Now
	b, logs := newTest(t, opts)
	mustAdd(t, b, tasks...)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	now := clkB.Now()
	for _, c := range []struct {
		id  string
		max time.Duration // the latest next run, from now
	}{
		{"every10", 10 * time.Second},
		{"catchup1", time.Second},
		{"failing", 4 * time.Second}, // in backoff: MaxBackoff
	} {
		ti := info(t, b, c.id)
		if ti.Next.Before(now) || ti.Next.After(now.Add(c.max)) {
			t.Errorf("%s: next run at now%+v, want within [now, now+%v]", c.id, ti.Next.Sub(now), c.max)
		}
	}
	if !strings.Contains(logs.String(), `msg="worker: restored due times beyond one interval from now were clamped; the wall clock may have moved back" tasks=3`) {
		t.Errorf("the clamp was not logged:\n%s", logs)
	}
	clkB.Advance(10 * time.Second)
	if n := stepAll(t, b, 10); n != 3 {
		t.Errorf("%d runs 10 s after the restore, want one per task", n)
	}
}

// TestCatchUpAfterDowntimeIsBounded: the next process starts an hour
// later (downtime, or its clock an hour ahead). A SkipLate task runs once;
// a CatchUp task has at most its catch-up limit (10 by default) of the
// 3600 missed points to run, one at a time spaced by a tenth of its
// interval, never in a burst; the points dropped are counted as skipped.
func TestCatchUpAfterDowntimeIsBounded(t *testing.T) {
	tasks := []Task{
		{ID: "catchup1", Every: time.Second, Policy: CatchUp, Run: nop},
		{ID: "skip1", Every: time.Second, Policy: SkipLate, Run: nop},
	}
	clkA := newFakeClock()
	snap := snapshotAt(t, clkA, Options{}, tasks)

	clkB := &fakeClock{t: clkA.Now().Add(time.Hour)}
	b, _ := newTest(t, Options{now: clkB.Now})
	mustAdd(t, b, tasks...)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if n := stepAll(t, b, 100); n != 2 {
		t.Fatalf("%d runs at the restore instant, want one per task, not a burst", n)
	}
	// The catch-up runs, 100 ms apart.
	catchUps := uint64(1)
	for range 20 {
		clkB.Advance(100 * time.Millisecond)
		stepAll(t, b, 100)
		ti := info(t, b, "catchup1")
		if n := ti.Runs - 1 - catchUps; n > 1 {
			t.Fatalf("%d catch-up runs within 100 ms", n)
		}
		catchUps = ti.Runs - 1
		if ti.Next.After(clkB.Now().Add(500 * time.Millisecond)) {
			break // caught up: the next run is the next schedule point
		}
	}
	// The run at the restore, the limit's ten, and the point that came
	// due during the second they took.
	if catchUps > 12 {
		t.Errorf("%d catch-up runs for 3600 missed points, want at most 12", catchUps)
	}
	if ti := info(t, b, "skip1"); ti.Runs > 4 {
		t.Errorf("skip1 ran %d times, want 2 and one a second after", ti.Runs)
	}
	if st := b.Stats(); st.SkippedTotal < 3600-12 {
		t.Errorf("%d points skipped, want the %d beyond the limit", st.SkippedTotal, 3600-12)
	}
}

// TestRestoreKeepsJitter: a task's next run may be up to its interval plus
// its jitter away; restored on the same clock, that is not a wall clock
// moved back. No due time may be clamped (which drops the jitter, and so
// the spread of the runs, and logs a warning for nothing).
func TestRestoreKeepsJitter(t *testing.T) {
	const n = 100
	var tasks []Task
	for i := range n {
		tasks = append(tasks, Task{ID: fmt.Sprint("t", i), Every: 10 * time.Second, Jitter: 10 * time.Second, Run: nop})
	}
	clk := newFakeClock()
	opts := Options{now: clk.Now}
	a, _ := newTest(t, opts)
	mustAdd(t, a, tasks...)
	clk.Advance(15 * time.Second)
	stepAll(t, a, 2*n)
	before := map[string]time.Time{}
	for _, tk := range tasks {
		before[tk.ID] = info(t, a, tk.ID).Next
	}
	if err := a.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, a)

	b, logs := newTest(t, opts)
	mustAdd(t, b, tasks...)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "clamped") {
		t.Errorf("due times clamped on the same clock:\n%s", logs)
	}
	for _, tk := range tasks {
		if got := info(t, b, tk.ID).Next; got.Sub(before[tk.ID]).Abs() > time.Millisecond {
			t.Fatalf("%s: next run at %v, was %v", tk.ID, got, before[tk.ID])
		}
	}
}
