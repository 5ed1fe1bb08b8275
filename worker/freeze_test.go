package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFreezeThawExactlyOnce freezes and thaws a busy supervisor several
// times and checks that no run starts while frozen and that every task's
// runs are numbered 1..n with no gap or repeat, and loops resume from
// their last checkpoint.
func TestFreezeThawExactlyOnce(t *testing.T) {
	s, _ := newTest(t, Options{Workers: 4})
	log := newSeqLog()
	var frozen atomic.Bool // set between Freeze returning and Thaw
	var violations atomic.Int32
	const periodic, loops = 100, 8
	for i := range periodic {
		p := SkipLate
		if i%2 == 0 {
			p = CatchUp
		}
		mustAdd(t, s, Task{ID: "p" + itoa(i), Every: time.Millisecond, Policy: p, Run: func(_ context.Context, r *Run) error {
			if frozen.Load() {
				violations.Add(1)
			}
			log.add(r.ID(), r.Seq())
			return nil
		}})
	}
	var saved [loops]atomic.Int64
	for i := range loops {
		mustAdd(t, s, Loop("l"+itoa(i), func(ctx context.Context, p *Progress[int64]) error {
			if frozen.Load() {
				violations.Add(1)
			}
			if v, want := p.Value(), saved[i].Load(); v != want {
				t.Errorf("loop %d resumed at %d, last saved %d", i, v, want)
			}
			for v := p.Value() + 1; ; v++ {
				if err := p.Save(v); err != nil {
					return err
				}
				saved[i].Store(v)
				select {
				case <-ctx.Done():
					return ctx.Err()
				default:
					runtime.Gosched()
				}
			}
		}))
	}
	start(t, s)
	var lastRuns uint64
	for cycle := range 5 {
		for s.Stats().RunsTotal < lastRuns+300 {
			runtime.Gosched()
		}
		if err := s.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		frozen.Store(true)
		st := s.Stats()
		if st.ByStatus[StatusRunning] != 0 || !st.Frozen || st.ByStatus[StatusFrozen] != periodic+loops {
			t.Fatalf("cycle %d: frozen stats %+v", cycle, st)
		}
		capture(t, s)                    // state is stable: two captures agree on every count
		time.Sleep(5 * time.Millisecond) // a window for a wrongful dispatch to show
		if st2 := s.Stats(); st2.RunsTotal != st.RunsTotal {
			t.Fatalf("cycle %d: %d runs finished while frozen", cycle, st2.RunsTotal-st.RunsTotal)
		}
		lastRuns = st.RunsTotal
		frozen.Store(false)
		s.Thaw()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d runs started while frozen", v)
	}
	for i := range periodic {
		id := "p" + itoa(i)
		seqs := log.get(id)
		checkConsecutive(t, id, seqs)
		if ti := info(t, s, id); ti.Runs != uint64(len(seqs)) {
			t.Fatalf("%s: %d runs counted, %d observed", id, ti.Runs, len(seqs))
		}
	}
	for i := range loops {
		if ti := info(t, s, "l"+itoa(i)); ti.Runs != 0 || ti.Failures != 0 || ti.Status != StatusIdle {
			t.Fatalf("loop %d after interrupts: %+v", i, ti)
		}
	}
}

// TestFreezeCutOff checks the fate of a run that outlives the freeze bound:
// cancelled with ErrCutOff, checkpoints refused, result dropped, and run
// again under the same sequence number both after Thaw and after Restore.
func TestFreezeCutOff(t *testing.T) {
	s, logs := newTest(t, Options{FreezeTimeout: 20 * time.Millisecond})
	started := make(chan uint64, 4)
	release := make(chan struct{})
	cutErr := make(chan error, 1)
	var first atomic.Bool
	first.Store(true)
	mustAdd(t, s, Task{ID: "slow", Run: func(ctx context.Context, r *Run) error {
		started <- r.Seq()
		if first.CompareAndSwap(true, false) {
			<-ctx.Done()
			<-release
			cutErr <- errors.Join(context.Cause(ctx), r.Checkpoint([]byte("late")))
			return nil // claims success, but it was cut off
		}
		return r.Checkpoint([]byte("done"))
	}})
	start(t, s)
	waitFor(t, started, "first run")

	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, s)
	close(release)
	errs := waitFor(t, cutErr, "cut-off run's end")
	if !errors.Is(errs, ErrCutOff) {
		t.Fatalf("cause/checkpoint errors %v, want ErrCutOff", errs)
	}
	if st := s.Stats(); st.CutOffTotal != 1 {
		t.Fatalf("cut off total %d", st.CutOffTotal)
	}
	if !strings.Contains(logs.String(), "cut_off=1") {
		t.Fatalf("cut-off not logged:\n%s", logs)
	}

	// The old process thaws: the run happens again, as number 1.
	s.Thaw()
	if seq := waitFor(t, started, "re-run after Thaw"); seq != 1 {
		t.Fatalf("re-run after Thaw has seq %d, want 1", seq)
	}

	// The new process: the snapshot says run 1 is still to do.
	s2, _ := newTest(t, Options{})
	done := make(chan uint64, 1)
	mustAdd(t, s2, Task{ID: "slow", Run: func(_ context.Context, r *Run) error {
		done <- r.Seq()
		return nil
	}})
	if err := s2.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if ti := info(t, s2, "slow"); ti.Runs != 0 || ti.StateBytes != 0 {
		t.Fatalf("restored: %+v", ti)
	}
	start(t, s2)
	if seq := waitFor(t, done, "re-run after Restore"); seq != 1 {
		t.Fatalf("re-run after Restore has seq %d, want 1", seq)
	}
}

// TestUpgradeInProcess moves typed periodic tasks and loops from one
// supervisor to another through Freeze, Capture and Restore, and checks
// that each task's runs continue their numbering and state.
func TestUpgradeInProcess(t *testing.T) {
	type counter struct{ N uint64 }
	log := newSeqLog()
	const periodic, loops = 50, 5
	var loopSaved [loops]atomic.Uint64
	register := func(s *Supervisor, target uint64, reached chan<- string) {
		for i := range periodic {
			var announced bool // runs of one task never overlap
			tk := Periodic("p"+itoa(i), time.Millisecond, func(_ context.Context, c *counter) error {
				c.N++
				if n := log.add("p"+itoa(i), c.N); n >= int(target) && !announced {
					announced = true
					reached <- "p" + itoa(i)
				}
				return nil
			})
			tk.Kind = "counter"
			mustAdd(t, s, tk)
		}
		for i := range loops {
			var announced bool
			mustAdd(t, s, Loop("l"+itoa(i), func(ctx context.Context, p *Progress[uint64]) error {
				if v, want := p.Value(), loopSaved[i].Load(); v != want {
					t.Errorf("loop %d resumed at %d, last saved %d", i, v, want)
				}
				for v := p.Value() + 1; ; v++ {
					if err := p.Save(v); err != nil {
						return err
					}
					loopSaved[i].Store(v)
					if v >= target && !announced {
						announced = true
						reached <- "l" + itoa(i)
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(100 * time.Microsecond):
					}
				}
			}))
		}
	}
	waitAll := func(reached <-chan string) {
		for range periodic + loops {
			waitFor(t, reached, "tasks to reach their target")
		}
	}

	a, _ := newTest(t, Options{})
	reachedA := make(chan string, periodic+loops)
	register(a, 5, reachedA)
	start(t, a)
	waitAll(reachedA)
	if err := a.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, a)
	statsA := a.Stats()
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	b, _ := newTest(t, Options{})
	reachedB := make(chan string, periodic+loops)
	register(b, statsA.MaxRuns+5, reachedB)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.RunsTotal != statsA.RunsTotal || st.Orphaned != 0 {
		t.Fatalf("restored totals %d (orphans %d), captured %d", st.RunsTotal, st.Orphaned, statsA.RunsTotal)
	}
	start(t, b)
	waitAll(reachedB)
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range periodic {
		id := "p" + itoa(i)
		seqs := log.get(id) // c.N, carried in the typed state across processes
		checkConsecutive(t, id, seqs)
		if ti := info(t, b, id); ti.Runs != uint64(len(seqs)) {
			t.Fatalf("%s: runs %d, observed %d", id, ti.Runs, len(seqs))
		}
	}
	h := b.Handoff()
	if !h.Restored || h.LastRunBeforeFreeze.IsZero() || h.FirstRunAfterRestore.IsZero() || h.Pause() <= 0 {
		t.Fatalf("handoff %+v, pause %v", h, h.Pause())
	}
}

// TestRestorePreservesSchedule checks on fake clocks that tasks keep their
// wall-clock schedule, backoff and policy across a handoff that took three
// seconds.
func TestRestorePreservesSchedule(t *testing.T) {
	clkA := newFakeClock()
	opts := func(clk *fakeClock) Options {
		return Options{InitialBackoff: time.Second, MaxBackoff: time.Minute, now: clk.Now}
	}
	fails := func(context.Context, *Run) error { return errors.New("down") }
	tasks := []Task{
		{ID: "every10", Every: 10 * time.Second, Run: nop},
		{ID: "catchup1", Every: time.Second, Policy: CatchUp, Run: nop},
		{ID: "skip1", Every: time.Second, Policy: SkipLate, Run: nop},
		{ID: "failing", Every: time.Second, Run: fails},
	}
	a, _ := newTest(t, opts(clkA))
	mustAdd(t, a, tasks...)
	clkA.Advance(time.Second)
	stepAll(t, a, 10) // every task but every10 ran once; failing is in backoff 1s
	clkA.Advance(time.Second)
	stepAll(t, a, 10) // failing: 2nd failure, backoff 2s
	before := map[string]TaskInfo{}
	for _, ti := range a.List("", 0) {
		before[ti.ID] = ti
	}
	if err := a.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, a)

	clkB := &fakeClock{t: clkA.Now().Add(3 * time.Second)} // restore 3 s later
	b, _ := newTest(t, opts(clkB))
	mustAdd(t, b, tasks...)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	for _, ti := range b.List("", 0) {
		was := before[ti.ID]
		if !ti.Next.Equal(was.Next) || ti.Runs != was.Runs || ti.ConsecutiveFailures != was.ConsecutiveFailures || ti.Status != was.Status {
			t.Errorf("%s: restored %+v, captured %+v", ti.ID, ti, was)
		}
	}
	// Now T0+5s. Due during the window: catchup1 (3s, 4s, 5s, run 100 ms
	// apart), skip1 (once), failing (retry at 4s).
	for i := range 3 {
		if i > 0 {
			clkB.Advance(100 * time.Millisecond)
		}
		stepAll(t, b, 20)
	}
	for _, c := range []struct {
		id   string
		runs uint64
		next time.Duration // from T0
	}{
		{"every10", 0, 10 * time.Second},
		{"catchup1", 5, 6 * time.Second},
		{"skip1", 3, 6 * time.Second},
		{"failing", 3, 5*time.Second + 4*time.Second}, // third failure: 4 s
	} {
		ti := info(t, b, c.id)
		if want := newFakeClock().Now().Add(c.next); ti.Runs != c.runs || !ti.Next.Equal(want) {
			t.Errorf("%s: runs %d next %v; want %d, %v", c.id, ti.Runs, ti.Next, c.runs, want)
		}
	}
}

// TestCaptureWithoutFreeze checks that a snapshot taken while a run is in
// flight records it to run again, under the same number.
func TestCaptureWithoutFreeze(t *testing.T) {
	s, _ := newTest(t, Options{})
	started, release := make(chan struct{}), make(chan struct{})
	mustAdd(t, s, Task{ID: "busy", Run: func(_ context.Context, r *Run) error {
		if err := r.Checkpoint([]byte("before")); err != nil {
			return err
		}
		close(started)
		<-release
		return r.Checkpoint([]byte("after"))
	}})
	start(t, s)
	waitFor(t, started, "run")
	snap := capture(t, s)
	close(release)

	s2, _ := newTest(t, Options{})
	got := make(chan string, 1)
	mustAdd(t, s2, Task{ID: "busy", Run: func(_ context.Context, r *Run) error {
		got <- fmt.Sprintf("seq %d state %s", r.Seq(), r.State())
		return nil
	}})
	if err := s2.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	start(t, s2)
	if g := waitFor(t, got, "re-run"); g != "seq 1 state before" {
		t.Fatalf("re-run saw %q", g)
	}
}
