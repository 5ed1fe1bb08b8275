package worker

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// testStop is the stop bound of these tests.
const testStop = 100 * time.Millisecond

// hung returns a run function that ignores its context: it reports its
// sequence number on started, then blocks until release is closed.
func hung(started chan<- uint64, release <-chan struct{}) RunFunc {
	return func(_ context.Context, r *Run) error {
		started <- r.Seq()
		<-release
		return nil
	}
}

// startHung returns a supervisor with one task whose runs ignore their
// context until release is closed (every 0 makes it a loop), running with
// ctx, once the task's first run has started, and Run's result channel.
func startHung(t *testing.T, ctx context.Context, opts Options, id string, every time.Duration) (*Supervisor, *syncBuffer, chan struct{}, <-chan error) {
	t.Helper()
	s, logs := newTest(t, opts)
	started := make(chan uint64, 1)
	release := make(chan struct{})
	mustAdd(t, s, Task{ID: id, Every: every, Run: hung(started, release)})
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	waitFor(t, started, "the first run of "+id)
	return s, logs, release, errc
}

// checkAbandoned fails unless s abandoned exactly one run, of task id at
// seq, and logged it.
func checkAbandoned(t *testing.T, s *Supervisor, logs *syncBuffer, id string, seq uint64) {
	t.Helper()
	if st := s.Stats(); st.AbandonedTotal != 1 {
		t.Errorf("AbandonedTotal %d, want 1", st.AbandonedTotal)
	}
	ab := s.Abandoned()
	if len(ab) != 1 || ab[0].ID != id || ab[0].Seq != seq || ab[0].Abandoned.Sub(ab[0].Cancelled) < testStop {
		t.Errorf("Abandoned() = %+v, want %s run %d, abandoned %v after its cancellation", ab, id, seq, testStop)
	}
	if !strings.Contains(logs.String(), `msg="worker: run abandoned: it did not return within the stop timeout" task=`+id) {
		t.Errorf("the abandoned run was not logged:\n%s", logs)
	}
}

// TestHungRunAbandonedAtShutdown: a periodic run that ignores its context
// does not hold Run past the Shutdown deadline and the stop bound; once it
// returns, its goroutine ends (goleak) and nothing of it is counted.
func TestHungRunAbandonedAtShutdown(t *testing.T) {
	s, logs, release, errc := startHung(t, context.Background(), Options{StopTimeout: testStop}, "hung", time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	if err := waitFor(t, errc, "Run to return despite the hung run"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkAbandoned(t, s, logs, "hung", 1)
	if ti := info(t, s, "hung"); ti.Status != StatusRunning || !ti.MaybeDuplicate {
		t.Errorf("hung task after the stop: %+v, want running and a possible duplicate", ti)
	}

	close(release) // the abandoned run returns late: dropped, not counted
	if ti := waitIdle(t, s, "hung"); ti.Runs != 0 {
		t.Errorf("the abandoned run was counted: %+v", ti)
	}
}

// waitIdle waits until task id is no longer running.
func waitIdle(t *testing.T, s *Supervisor, id string) TaskInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ti := info(t, s, id)
		if ti.Status != StatusRunning {
			return ti
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %q still running", id)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGracefulShutdownWaitsForRuns: the stop bound applies to cancelled
// runs only: a graceful Shutdown still waits for a slow periodic run
// longer than StopTimeout, and abandons nothing.
func TestGracefulShutdownWaitsForRuns(t *testing.T) {
	s, _, release, errc := startHung(t, context.Background(), Options{StopTimeout: testStop}, "slow", time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a run in flight", err)
	case <-time.After(3 * testStop):
	}
	close(release)
	if err := waitFor(t, shut, "Shutdown"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, errc, "Run"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.AbandonedTotal != 0 || st.RunsTotal != 1 {
		t.Errorf("after a graceful stop: %d abandoned, %d runs; want 0 and 1", st.AbandonedTotal, st.RunsTotal)
	}
}

// TestHungLoopAbandonedAtHardStop: a loop that ignores its context does
// not hold Run once Run's context is cancelled.
func TestHungLoopAbandonedAtHardStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, logs, release, errc := startHung(t, ctx, Options{StopTimeout: testStop}, "loop", 0)
	defer close(release) // let the abandoned goroutine end before goleak looks
	cancel()
	if err := waitFor(t, errc, "Run to return despite the hung loop"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkAbandoned(t, s, logs, "loop", 1)
}

// TestCutOffRunAbandonedAfterFreeze: the upgrade path. A run cut off by
// the freeze bound is still running when the old process stops for good;
// a graceful Shutdown does not wait for it past the stop bound counted
// from the cut-off, and the snapshot tells the new process that the run
// may be duplicated: Restore logs it, TaskInfo, Stats and the re-run's
// Run.MaybeDuplicate say so, and the next run is no longer a duplicate.
func TestCutOffRunAbandonedAfterFreeze(t *testing.T) {
	s, logs, release, errc := startHung(t, context.Background(),
		Options{FreezeTimeout: 20 * time.Millisecond, StopTimeout: testStop}, "hung", time.Millisecond)
	defer close(release)
	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, s)
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if err := waitFor(t, shut, "Shutdown despite the cut-off run"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := waitFor(t, errc, "Run"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkAbandoned(t, s, logs, "hung", 1)

	s2, logs2 := newTest(t, Options{})
	type seen struct {
		seq uint64
		dup bool
	}
	runs := make(chan seen, 2)
	mustAdd(t, s2, Task{ID: "hung", Every: time.Millisecond, Run: func(_ context.Context, r *Run) error {
		select {
		case runs <- seen{r.Seq(), r.MaybeDuplicate()}:
		default:
		}
		return nil
	}})
	if err := s2.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs2.String(), `msg="worker: run may be duplicated: the previous process cut it off" task=hung seq=1`) {
		t.Errorf("Restore did not report the possible duplicate:\n%s", logs2)
	}
	if ti, st := info(t, s2, "hung"), s2.Stats(); !ti.MaybeDuplicate || st.MaybeDuplicated != 1 {
		t.Errorf("restored: %+v, %d possible duplicates; want the task marked", ti, st.MaybeDuplicated)
	}
	start(t, s2)
	if r := waitFor(t, runs, "the re-run"); r != (seen{1, true}) {
		t.Errorf("re-run: %+v, want seq 1 marked as a possible duplicate", r)
	}
	if r := waitFor(t, runs, "the next run"); r != (seen{2, false}) {
		t.Errorf("next run: %+v, want seq 2 not a duplicate", r)
	}
	if st := s2.Stats(); st.MaybeDuplicated != 0 {
		t.Errorf("%d possible duplicates after the re-run", st.MaybeDuplicated)
	}
}

// TestNotStartedRunIsNoDuplicate: a hard stop cuts off the runs in flight
// and marks them as possible duplicates; a due run that never started (it
// waited for the only runner, which is hung) is not marked, and only the
// hung run is abandoned.
func TestNotStartedRunIsNoDuplicate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, _, release, errc := startHung(t, ctx, Options{Workers: 1, StopTimeout: testStop}, "a-hung", time.Millisecond)
	defer close(release)
	// Queued behind the hung run on the only runner.
	mustAdd(t, s, Task{ID: "b-queued", Every: time.Millisecond, Run: nop})
	time.Sleep(20 * time.Millisecond) // let it come due; either way it never starts
	cancel()
	if err := waitFor(t, errc, "Run"); err != nil {
		t.Fatal(err)
	}
	if ti := info(t, s, "a-hung"); !ti.MaybeDuplicate {
		t.Errorf("the hung run is not marked: %+v", ti)
	}
	if ti := info(t, s, "b-queued"); ti.MaybeDuplicate || ti.Runs != 0 || ti.Status == StatusRunning {
		t.Errorf("the queued run: %+v, want idle, not a possible duplicate", ti)
	}
	if ab := s.Abandoned(); len(ab) != 1 || ab[0].ID != "a-hung" {
		t.Errorf("Abandoned() = %+v, want only a-hung", ab)
	}
}
