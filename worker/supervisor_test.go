package worker

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{name: "zero value"},
		{name: "explicit", opts: Options{Workers: 3, InitialBackoff: time.Second, MaxBackoff: time.Minute, FreezeTimeout: time.Second, Name: "my.worker-1"}},
		{name: "negative workers", opts: Options{Workers: -1}, wantErr: true},
		{name: "negative stop timeout", opts: Options{StopTimeout: -time.Second}, wantErr: true},
		{name: "max below initial", opts: Options{InitialBackoff: time.Minute, MaxBackoff: time.Second}, wantErr: true},
		{name: "bad name", opts: Options{Name: "Upper Case"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidOptions) {
					t.Fatalf("New = %v, want ErrInvalidOptions", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.opts.Workers <= 0 || s.opts.FreezeTimeout <= 0 || s.opts.StopTimeout <= 0 || s.Participant().Name == "" {
				t.Fatalf("defaults not applied: %+v", s.opts)
			}
		})
	}
}

func TestAddValidation(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustAdd(t, s, Task{ID: "a", Every: time.Second, Run: nop})
	tests := []struct {
		name string
		task Task
		want error
	}{
		{name: "empty id", task: Task{Every: time.Second, Run: nop}, want: ErrInvalidTask},
		{name: "long id", task: Task{ID: strings.Repeat("x", MaxIDLength+1), Run: nop}, want: ErrInvalidTask},
		{name: "no run", task: Task{ID: "b", Every: time.Second}, want: ErrInvalidTask},
		{name: "negative every", task: Task{ID: "b", Every: -1, Run: nop}, want: ErrInvalidTask},
		{name: "jitter above every", task: Task{ID: "b", Every: time.Second, Jitter: 2 * time.Second, Run: nop}, want: ErrInvalidTask},
		{name: "jitter on a loop", task: Task{ID: "b", Jitter: time.Second, Run: nop}, want: ErrInvalidTask},
		{name: "bad policy", task: Task{ID: "b", Every: time.Second, Policy: 7, Run: nop}, want: ErrInvalidTask},
		{name: "catch-up spacing above every", task: Task{ID: "b", Every: time.Second, Policy: CatchUp, CatchUpSpacing: 2 * time.Second, Run: nop}, want: ErrInvalidTask},
		{name: "negative catch-up spacing", task: Task{ID: "b", Every: time.Second, CatchUpSpacing: -1, Run: nop}, want: ErrInvalidTask},
		{name: "duplicate", task: Task{ID: "a", Every: time.Second, Run: nop}, want: ErrDuplicateTask},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Add(tt.task); !errors.Is(err, tt.want) {
				t.Fatalf("Add = %v, want %v", err, tt.want)
			}
		})
	}
	if err := s.Remove("nope"); !errors.Is(err, ErrUnknownTask) {
		t.Fatalf("Remove(unknown) = %v, want ErrUnknownTask", err)
	}
}

// TestPolicies drives the schedule on a fake clock: after a stall of ten
// intervals, CatchUp runs ten times, a tenth of an interval apart, and
// SkipLate once.
func TestPolicies(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, s,
		Task{ID: "skip", Every: time.Second, Policy: SkipLate, Run: nop},
		Task{ID: "catch", Every: time.Second, Policy: CatchUp, Run: nop},
		Task{ID: "slow", Every: 3 * time.Second, Run: nop},
	)
	if n := stepAll(t, s, 100); n != 0 {
		t.Fatalf("%d runs before anything is due", n)
	}
	clk.Advance(time.Second)
	stepAll(t, s, 100)
	clk.Advance(10 * time.Second) // now T0+11s
	// CatchUp's late runs are a tenth of its interval apart.
	for i := range 10 {
		if i > 0 {
			clk.Advance(100 * time.Millisecond)
		}
		if n := stepAll(t, s, 100); i > 0 && n != 1 {
			t.Fatalf("%d runs at T0+11s+%dms, want catch's one", n, 100*i)
		}
	}

	for _, c := range []struct {
		id       string
		runs     uint64
		nextFrom time.Duration // next due, from T0
	}{
		{"skip", 2, 12 * time.Second},
		{"catch", 11, 12 * time.Second},
		{"slow", 1, 12 * time.Second},
	} {
		ti := info(t, s, c.id)
		want := newFakeClock().Now().Add(c.nextFrom)
		if ti.Runs != c.runs || !ti.Next.Equal(want) {
			t.Errorf("%s: runs %d next %v; want %d, %v", c.id, ti.Runs, ti.Next, c.runs, want)
		}
	}
	// skip served 1s, then at 11s stood for 2s..11s: 9 dropped.
	// slow served 3s at 11s, standing for 3s, 6s and 9s: 2 dropped.
	if st := s.Stats(); st.SkippedTotal != 11 || st.RunsTotal != 14 || st.MinRuns != 1 || st.MaxRuns != 11 {
		t.Errorf("stats %+v", st)
	}
}

// TestDispatchOrder checks that runs start in due order, both on the step
// harness and through the real scheduler with one runner.
func TestDispatchOrder(t *testing.T) {
	everies := []time.Duration{5, 1, 3, 2, 4}
	want := []string{"t1", "t2", "t3", "t4", "t5"}
	tasks := func(record func(string)) []Task {
		var out []Task
		for _, e := range everies {
			id := "t" + string(rune('0'+e))
			out = append(out, Task{ID: id, Every: e * time.Second, Run: func(context.Context, *Run) error {
				record(id)
				return nil
			}})
		}
		return out
	}

	t.Run("step", func(t *testing.T) {
		clk := newFakeClock()
		s, _ := newTest(t, Options{now: clk.Now})
		var got []string
		mustAdd(t, s, tasks(func(id string) { got = append(got, id) })...)
		clk.Advance(5 * time.Second)
		for range 5 {
			step(s)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("order %v, want %v", got, want)
		}
	})

	t.Run("scheduler", func(t *testing.T) {
		clk := newFakeClock()
		s, _ := newTest(t, Options{Workers: 1, now: clk.Now})
		var (
			mu   sync.Mutex
			got  []string
			seen = map[string]bool{}
			all  = make(chan struct{})
		)
		mustAdd(t, s, tasks(func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if !seen[id] {
				seen[id] = true
				got = append(got, id)
				if len(got) == len(want) {
					close(all)
				}
			}
		})...)
		if err := s.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		start(t, s)
		clk.Advance(time.Hour) // everything is due; the clock stands still after
		s.Thaw()
		waitFor(t, all, "every task's first run")
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("first-run order %v, want %v", got, want)
		}
	})
}

// TestBackoffCappedAndReset fails a task on a fake clock and checks each
// retry delay, the cap, and the reset on success.
func TestBackoffCappedAndReset(t *testing.T) {
	clk := newFakeClock()
	s, logs := newTest(t, Options{InitialBackoff: time.Second, MaxBackoff: 4 * time.Second, now: clk.Now})
	var fail atomic.Bool
	fail.Store(true)
	mustAdd(t, s, Task{ID: "f", Every: time.Minute, Run: func(context.Context, *Run) error {
		if fail.Load() {
			return errors.New("boom")
		}
		return nil
	}})
	clk.Advance(time.Minute)
	for i, wantDelay := range []time.Duration{1, 2, 4, 4, 4} {
		if id := step(s); id != "f" {
			t.Fatalf("failure %d: no run", i+1)
		}
		ti := info(t, s, "f")
		if got := ti.Next.Sub(clk.Now()); got != wantDelay*time.Second || ti.Status != StatusBackoff || ti.ConsecutiveFailures != uint64(i+1) {
			t.Fatalf("after failure %d: next in %v, status %v, consecutive %d; want %v", i+1, got, ti.Status, ti.ConsecutiveFailures, wantDelay*time.Second)
		}
		if step(s) != "" {
			t.Fatal("retry ran before its backoff")
		}
		clk.Advance(wantDelay * time.Second)
	}
	fail.Store(false)
	if step(s) != "f" {
		t.Fatal("no retry")
	}
	ti := info(t, s, "f")
	if ti.Status != StatusIdle || ti.ConsecutiveFailures != 0 || ti.Failures != 5 || ti.Runs != 6 || ti.LastError != "boom" {
		t.Fatalf("after success: %+v", ti)
	}
	// The success at 1m15s stood for the 1m point it retried; next is 2m.
	if want := newFakeClock().Now().Add(2 * time.Minute); !ti.Next.Equal(want) {
		t.Fatalf("next %v, want %v", ti.Next, want)
	}
	if !strings.Contains(logs.String(), "task=f") || !strings.Contains(logs.String(), "retry_in=4s") {
		t.Fatalf("failure not logged with task ID and retry:\n%s", logs)
	}
}

// TestFailuresIsolated runs a panicking task, a failing one and a
// Goexit-ing one next to healthy tasks on the real scheduler.
func TestFailuresIsolated(t *testing.T) {
	s, logs := newTest(t, Options{Workers: 2, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	healthy := make(chan struct{})
	var once sync.Once
	mustAdd(t, s,
		Task{ID: "panics", Every: time.Millisecond, Run: func(context.Context, *Run) error { panic("kaboom") }},
		Task{ID: "fails", Every: time.Millisecond, Run: func(context.Context, *Run) error { return errors.New("nope") }},
		Task{ID: "goexit", Every: time.Millisecond, Run: func(context.Context, *Run) error { runtime.Goexit(); return nil }},
		Task{ID: "ok", Every: time.Millisecond, Run: func(_ context.Context, r *Run) error {
			if r.Seq() == 20 {
				once.Do(func() { close(healthy) })
			}
			return nil
		}},
	)
	start(t, s)
	waitFor(t, healthy, "20 runs of the healthy task")
	// The bad tasks keep failing on their own schedule meanwhile.
	for _, id := range []string{"panics", "fails", "goexit"} {
		for info(t, s, id).Failures < 3 {
			runtime.Gosched()
		}
	}
	st := s.Stats()
	if st.PanicsTotal == 0 || st.FailuresTotal < 9 {
		t.Fatalf("stats %+v", st)
	}
	if ti := info(t, s, "panics"); !strings.Contains(ti.LastError, "kaboom") {
		t.Fatalf("last error %q", ti.LastError)
	}
	if ti := info(t, s, "goexit"); ti.LastError != errGoexit.Error() {
		t.Fatalf("last error %q", ti.LastError)
	}
	l := logs.String()
	if !strings.Contains(l, "run panicked") || !strings.Contains(l, "task=panics") || !strings.Contains(l, "stack=") {
		t.Fatalf("panic not logged with task and stack")
	}
}

func TestAddRemoveWhileRunning(t *testing.T) {
	s, _ := newTest(t, Options{Workers: 4})
	const n = 100
	var runs [2 * n]atomic.Int64
	mk := func(i int) Task {
		return Task{ID: "t" + itoa(i), Every: time.Millisecond, Run: func(context.Context, *Run) error {
			runs[i].Add(1)
			return nil
		}}
	}
	for i := range n {
		mustAdd(t, s, mk(i))
	}
	start(t, s)
	for runs[0].Load() < 3 {
		runtime.Gosched()
	}
	// Remove the even tasks, add new ones. The count is read after
	// Remove returns: read before, a test goroutine preempted between
	// the two (a loaded machine, -race) saw the task's runs in between.
	var atRemoval [n]int64
	for i := 0; i < n; i += 2 {
		if err := s.Remove("t" + itoa(i)); err != nil {
			t.Fatal(err)
		}
		atRemoval[i] = runs[i].Load()
	}
	for i := n; i < 2*n; i++ {
		mustAdd(t, s, mk(i))
	}
	for i := n; i < 2*n; i++ {
		for runs[i].Load() < 5 {
			runtime.Gosched()
		}
	}
	for i := 0; i < n; i += 2 {
		// A run dispatched before Remove may still start; no other.
		if got := runs[i].Load(); got > atRemoval[i]+1 {
			t.Fatalf("removed task t%d ran %d times after removal", i, got-atRemoval[i])
		}
		if _, ok := s.Task("t" + itoa(i)); ok {
			t.Fatalf("removed task t%d still listed", i)
		}
	}
	if st := s.Stats(); st.Tasks != n+n/2 {
		t.Fatalf("%d tasks, want %d", st.Tasks, n+n/2)
	}
}

// TestRemoveReAddWaitsForOldRun checks that an ID never has two runs in
// flight, even across Remove and Add.
func TestRemoveReAddWaitsForOldRun(t *testing.T) {
	s, _ := newTest(t, Options{Workers: 2})
	started, release := make(chan struct{}), make(chan struct{})
	var cause atomic.Value
	mustAdd(t, s, Task{ID: "l", Run: func(ctx context.Context, r *Run) error {
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		<-release // keep running after cancellation
		if err := r.Checkpoint([]byte("x")); !errors.Is(err, ErrRemoved) {
			t.Errorf("Checkpoint after Remove = %v, want ErrRemoved", err)
		}
		return nil
	}})
	start(t, s)
	waitFor(t, started, "first instance")
	if err := s.Remove("l"); err != nil {
		t.Fatal(err)
	}
	second := make(chan uint64)
	mustAdd(t, s, Task{ID: "l", Run: func(_ context.Context, r *Run) error {
		second <- r.Seq()
		return nil
	}})
	s.mu.Lock()
	held := s.byID.get(s.all, "l").held
	s.mu.Unlock()
	if !held {
		t.Fatal("new instance not held while the removed one runs")
	}
	close(release)
	if seq := waitFor(t, second, "second instance"); seq != 1 {
		t.Fatalf("second instance seq %d, want 1", seq)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, ErrRemoved) {
		t.Fatalf("cause %v, want ErrRemoved", c)
	}
}

func TestLoopDoneAndRestartAfterFailure(t *testing.T) {
	s, _ := newTest(t, Options{InitialBackoff: time.Millisecond})
	done := make(chan struct{})
	var attempts atomic.Int32
	mustAdd(t, s, Task{ID: "l", Run: func(_ context.Context, r *Run) error {
		n := attempts.Add(1)
		if got := string(r.State()); n > 1 && got != "cursor-"+itoa(int(n-1)) {
			t.Errorf("attempt %d resumed from %q", n, got)
		}
		if err := r.Checkpoint([]byte("cursor-" + itoa(int(n)))); err != nil {
			return err
		}
		if n < 3 {
			return errors.New("transient")
		}
		close(done)
		return nil
	}})
	start(t, s)
	waitFor(t, done, "third attempt")
	for info(t, s, "l").Status != StatusDone {
		runtime.Gosched()
	}
	if ti := info(t, s, "l"); ti.Runs != 3 || ti.Failures != 2 || !ti.Next.IsZero() {
		t.Fatalf("%+v", ti)
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("shutdown waits for runs", testShutdownWaitsForRuns)
	t.Run("shutdown deadline cancels runs", testShutdownDeadlineCancelsRuns)
	t.Run("run ctx is a hard stop", testRunCtxIsHardStop)
	t.Run("shutdown before run", testShutdownBeforeRun)
}

func testShutdownWaitsForRuns(t *testing.T) {
	s, _ := newTest(t, Options{})
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	mustAdd(t, s, Task{ID: "p", Every: time.Millisecond, Run: func(context.Context, *Run) error {
		once.Do(func() { close(started) })
		<-release
		return nil
	}})
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	waitFor(t, started, "run")
	shutErr := make(chan error, 1)
	go func() { shutErr <- s.Shutdown(context.Background()) }()
	// Shutdown cannot finish while the run is blocked; once released
	// it returns nil, and Run too.
	for {
		s.mu.Lock()
		p := s.phase
		s.mu.Unlock()
		if p == phaseStopping {
			break
		}
		runtime.Gosched()
	}
	close(release)
	if err := waitFor(t, shutErr, "Shutdown"); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := waitFor(t, runErr, "Run"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if ti := info(t, s, "p"); ti.Runs != 1 || ti.Status != StatusIdle {
		t.Fatalf("%+v", ti)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Shutdown = %v", err)
	}
	if err := s.Add(Task{ID: "q", Every: time.Second, Run: nop}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Shutdown = %v", err)
	}
}

func testShutdownDeadlineCancelsRuns(t *testing.T) {
	s, _ := newTest(t, Options{})
	started := make(chan struct{})
	cause := make(chan error, 1)
	mustAdd(t, s, Task{ID: "p", Every: time.Millisecond, Run: func(ctx context.Context, _ *Run) error {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}})
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	waitFor(t, started, "run")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if c := waitFor(t, cause, "cancellation"); !errors.Is(c, ErrShutdown) {
		t.Fatalf("cause %v", c)
	}
	if err := waitFor(t, runErr, "Run"); err != nil {
		t.Fatal(err)
	}
	// The abandoned run is not counted and is marked to run again.
	if ti := info(t, s, "p"); ti.Runs != 0 || ti.Failures != 0 {
		t.Fatalf("%+v", ti)
	}
}

func testRunCtxIsHardStop(t *testing.T) {
	s, _ := newTest(t, Options{})
	started := make(chan struct{})
	mustAdd(t, s, Task{ID: "l", Run: func(ctx context.Context, _ *Run) error {
		close(started)
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	waitFor(t, started, "loop")
	if err := s.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v", err)
	}
	if err := s.Restore(strings.NewReader("")); !errors.Is(err, ErrRunning) {
		t.Fatalf("Restore while running = %v", err)
	}
	cancel()
	if err := waitFor(t, runErr, "Run"); err != nil {
		t.Fatal(err)
	}
	if ti := info(t, s, "l"); ti.Status == StatusDone || ti.Runs != 0 {
		t.Fatalf("stopped loop: %+v", ti)
	}
}

func testShutdownBeforeRun(t *testing.T) {
	s, _ := newTest(t, Options{})
	for range 2 {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run = %v", err)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
