package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

type phase uint8

const (
	phaseNew      phase = iota // before Run: Add, Restore allowed
	phaseRunning               // Run is dispatching
	phaseStopping              // Shutdown or ctx: no new runs, waiting for runs in flight
	phaseStopped               // every goroutine joined
)

// A Supervisor runs registered tasks on schedule with a bounded pool of
// runner goroutines, retries failed runs with backoff, and moves its tasks'
// schedule and state to the next process through Participant.
//
// One scheduler goroutine sleeps until the end of the Options.Resolution
// slot that holds the earliest due time in a heap, then hands every due
// periodic task to an idle runner; a runner that finishes takes the next
// due task itself, so a busy supervisor costs few wake-ups. A running loop
// has a goroutine of its own. All of them are joined by Run. Its methods
// are safe for concurrent use. A Supervisor runs once: after Shutdown it
// cannot be restarted.
type Supervisor struct {
	opts Options
	log  *slog.Logger
	m    *metrics // nil without a Registerer
	base time.Time

	// baseCtx is the parent of every run's context; cancelling it is the
	// hard stop.
	baseCtx    context.Context
	baseCancel context.CancelCauseFunc

	work chan job      // scheduler -> runners; never blocks, see dispatchDueLocked
	wake chan struct{} // pokes the scheduler; capacity 1
	quit chan struct{} // closed when stopping begins
	done chan struct{} // closed when Run has joined every goroutine
	// joinPoke wakes Run's join when a goroutine exits or a run's stop
	// bound is set; capacity 1.
	joinPoke chan struct{}
	// clock0 is the origin of the stop bounds, on the real monotonic
	// clock: they bound real waiting, whatever Options.now says.
	clock0 time.Time

	// awaitFirst is set by Restore; the first run to start afterwards
	// clears it and stamps firstStart (wall ns).
	awaitFirst atomic.Bool
	firstStart atomic.Int64

	mu sync.Mutex
	// Everything below is guarded by mu.
	phase    phase
	frozen   bool
	byID     taskIndex
	all      []*task // registration order; what Capture walks
	q        taskHeap
	idle     int // runners with no run assigned
	inflight int // runs dispatched and not finished
	// starved is set when due tasks wait for a runner: the next runner to
	// go idle pokes the scheduler.
	starved bool
	// sleepUntil is the due time the scheduler sleeps until, so that a
	// push of an earlier task wakes it; MinInt64 means pushes need not
	// wake it (frozen, starved, not running).
	sleepUntil int64
	drained    chan struct{} // closed when inflight reaches 0, for Freeze
	// genCtx is the context of periodic runs; Freeze cancels it when it
	// cuts runs off and starts a new one.
	genCtx    context.Context
	genCancel context.CancelCauseFunc
	counts    [numStatus]int
	totals    totals
	orphans   map[string]*record // snapshot tasks without registration or kind
	kinds     map[string]*Kind   // RegisterKind
	removing  map[string]*task   // removed tasks whose run is in flight
	// lastFinish is when the last counted run finished (wall ns);
	// prevLastFinish is the old process's, from the snapshot.
	lastFinish     int64
	prevLastFinish int64
	restored       bool
	// recentSpecs are the specs of the last tasks inserted, of distinct
	// shapes, the most recent first; see shareSpecLocked.
	recentSpecs [numRecentSpecs]recentSpec
	// undo is what Reset needs to undo the last Restore; Run drops it.
	undo *restoreUndo

	// live counts the goroutines started by the supervisor and not yet
	// returned; stuck counts those of them in an abandoned run. Run joins
	// when they are equal.
	live, stuck int
	// minStopBy is the earliest stop bound of a run in flight (see
	// task.stopBy), 0 for none; it may be stale, never too late.
	minStopBy int64
	// abandonedTotal counts the runs abandoned in this process;
	// abandoned lists the first maxAbandonedListed of them.
	abandonedTotal uint64
	abandoned      []AbandonedRun
	// dupCount counts the registered tasks whose next run may be a
	// duplicate (task.maybeDup).
	dupCount int
	// multis are the tasks with run state (task.ov): OverlapAllow tasks
	// that ran, and tasks restored with pending runs.
	multis map[*task]struct{}
	// pc tracks the changes since a pre-copy first round started (old
	// process); pcr is set while a pre-copy base awaits its delta (new
	// process). See precopy.go.
	pc  *preCopy
	pcr *preCopyRestore
}

// totals are the supervisor-wide counters. They travel in the snapshot so
// that they do not reset across an upgrade.
type totals struct {
	runs, failures, panics, skipped, cutOff uint64
}

// job is one dispatched run.
type job struct {
	t   *task
	ctx context.Context
}

// New returns a Supervisor configured by opts. It fails when an option is
// out of range or the metrics cannot be registered.
func New(opts Options) (*Supervisor, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		opts:       opts,
		log:        opts.Logger,
		base:       opts.now(),
		work:       make(chan job, opts.Workers),
		wake:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		idle:       opts.Workers,
		sleepUntil: math.MinInt64,
		joinPoke:   make(chan struct{}, 1),
		clock0:     time.Now(),
	}
	s.baseCtx, s.baseCancel = context.WithCancelCause(context.Background())
	s.genCtx, s.genCancel = context.WithCancelCause(s.baseCtx)
	if opts.Registerer != nil {
		s.m, err = newMetrics(s, opts.Registerer)
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// mono returns t on the supervisor's monotonic clock.
func (s *Supervisor) mono(t time.Time) int64 { return int64(t.Sub(s.base)) }

// Add registers a task. A periodic task's first run is due one interval
// later (at Start, if later, for a cron task the first point after now or
// Start), a one-off task's at At, a loop starts at once. If the last
// Restore held progress for the ID that no task claimed, the task adopts it
// (migrating its state) and resumes where it was. A task without Run is
// data of its registered Kind (RegisterKind; ErrUnknownKind otherwise): it
// travels whole in the snapshot and the state file, so that later
// processes restore it without registering it. Add works in every phase
// but after Shutdown began (ErrClosed) and while frozen (ErrFrozen: the
// snapshot is taken or being taken and would lose the task; retry).
func (s *Supervisor) Add(t Task) error {
	if err := t.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutableLocked(); err != nil {
		return err
	}
	data := t.Run == nil
	if data {
		k := s.kinds[t.Kind]
		if k == nil {
			return fmt.Errorf("%w: %w: %q (task %q has no Run): register the kind with RegisterKind", ErrInvalidTask, ErrUnknownKind, t.Kind, t.ID)
		}
		t.Run, t.Version, t.Migrations = k.Run, k.Version, k.Migrations
	}
	if s.byID.get(s.all, t.ID) != nil {
		return fmt.Errorf("%w: %q", ErrDuplicateTask, t.ID)
	}
	rec := s.orphans[t.ID]
	if rec != nil && data && rec.flags&flagData != 0 {
		return fmt.Errorf("%w: %q is the ID of an orphaned task (kind %q); remove it first", ErrDuplicateTask, t.ID, rec.kind)
	}
	spec := t.withDefaults()
	nt := newTask(t.ID, s.shareSpecLocked(&spec))
	nt.data = data
	now := s.opts.now()
	if rec != nil {
		p, err := prepare(nt.spec, rec)
		if err != nil {
			return err
		}
		delete(s.orphans, t.ID)
		s.applyLocked(nt, p, now)
		s.log.Info("worker: task adopted its state from the snapshot", "task", t.ID, "runs", nt.runs)
	} else {
		s.scheduleFirstLocked(nt, now)
	}
	s.insertLocked(nt)
	return nil
}

// scheduleFirstLocked sets the first due time of t, just added.
func (s *Supervisor) scheduleFirstLocked(t *task, now time.Time) {
	n := s.mono(now)
	t.nominal, t.due = n, n
	t.paused = t.spec.Paused
	if t.paused {
		t.status = StatusPaused
	}
	switch {
	case t.loop():
		return
	case t.oneOff():
		t.nominal = s.mono(t.spec.At)
		t.due = t.nominal
		return
	}
	from := n
	if st := t.spec.Start; !st.IsZero() && st.After(now) {
		from = s.mono(st)
	}
	if t.spec.cron != nil {
		t.nominal = s.cronAfter(t, from-1) // Start itself may be a point
	} else {
		t.nominal = from + int64(t.spec.Every)
	}
	if s.pastEnd(t, t.nominal) {
		t.status = StatusDone
		return
	}
	t.jit = jitter(t.spec.Jitter)
	t.due = t.nominal + t.jit
}

// pastEnd reports whether the schedule point p is beyond t's End, or
// never.
func (s *Supervisor) pastEnd(t *task, p int64) bool {
	return p == never || !t.spec.End.IsZero() && s.wallOf(p).After(t.spec.End)
}

// insertLocked registers t, whose schedule is set, and queues it.
func (s *Supervisor) insertLocked(t *task) {
	t.idx = uint32(len(s.all))
	s.all = append(s.all, t)
	s.byID.add(s.all, t)
	s.counts[t.status]++
	s.markLocked(t)
	if t.data && t.c().specBytes == nil {
		t.coldLocked().specBytes = encodeSpec(t.spec)
	}
	if t.status == StatusDone || t.status == StatusPaused {
		return
	}
	if _, busy := s.removing[t.id]; busy {
		// Keep "at most one run in flight per ID" across Remove and Add.
		t.held = true
		return
	}
	s.pushLocked(t)
}

// Remove unregisters a task. While the supervisor is frozen for an
// upgrade or a state file write, it fails with ErrFrozen, as Add does: the
// snapshot would not have the change. It does not wait for a run in flight: that
// run finishes in the background (a loop's context is cancelled with
// ErrRemoved) and its result is dropped. A task added again under the same
// ID does not start before that run ends.
//
// An orphan (Orphans) is removed too: it is gone from the next snapshot.
func (s *Supervisor) Remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		return frozenError("Remove")
	}
	t := s.byID.get(s.all, id)
	if t == nil {
		if _, ok := s.orphans[id]; ok {
			delete(s.orphans, id)
			s.markRemovedLocked(id)
			return nil
		}
		return fmt.Errorf("%w: %q", ErrUnknownTask, id)
	}
	s.dropLocked(t)
	if t.status == StatusRunning {
		if s.removing == nil {
			s.removing = make(map[string]*task)
		}
		s.removing[id] = t
		if cancel := t.c().cancel; cancel != nil {
			cancel(ErrRemoved)
			s.startStopClockLocked(t)
		}
	}
	return nil
}

// mutableLocked returns why tasks cannot be added now, if they cannot:
// the supervisor is stopping, or frozen, in which case the snapshot is
// taken or about to be and would not have the change.
func (s *Supervisor) mutableLocked() error {
	switch {
	case s.phase >= phaseStopping:
		return ErrClosed
	case s.frozen:
		return frozenError("Add")
	}
	return nil
}

// frozenError is what a change refused while frozen returns.
func frozenError(op string) error {
	return fmt.Errorf("%w: %s refused: the snapshot that the next process (or the state file) gets is taken; retry in a moment, the next process takes it, or this one once thawed", ErrFrozen, op)
}

// dropLocked unregisters t. A queued entry is dropped when popped.
func (s *Supervisor) dropLocked(t *task) {
	s.byID.remove(s.all, t)
	s.markRemovedLocked(t.id)
	last := s.all[len(s.all)-1]
	from := last.idx
	s.all[t.idx], last.idx = last, t.idx
	s.all[len(s.all)-1] = nil
	s.all = s.all[:len(s.all)-1]
	if last != t {
		s.byID.moved(last, from)
		s.markLocked(last) // moved: a first round in progress may miss it
		if last.qseq != 0 {
			// Its queue entry names its old position: queue it
			// again at its new one, which makes that entry stale.
			s.pushLocked(last)
		}
	}
	s.counts[t.status]--
	s.setMaybeDupLocked(t, false)
	t.removed = true
	delete(s.multis, t) // its run records keep t.ov until they end
}

// Run starts the scheduler and the runners and blocks until the
// supervisor stops: after Shutdown, or when ctx is done, which is a hard
// stop (every run's context is cancelled at once). It returns once every
// goroutine it started has returned, except that a run whose context was
// cancelled and that has not returned Options.StopTimeout later (counted
// from its cancellation) is abandoned: Run stops waiting for it, logs it,
// counts it (Stats.AbandonedTotal, Abandoned) and returns, leaving its
// goroutine to end when it does, its result dropped. So a run that
// ignores its context cannot keep the process from exiting. It returns
// nil after a stop, ErrRunning if Run was already called, and ErrClosed
// after Shutdown.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	switch s.phase {
	case phaseRunning:
		s.mu.Unlock()
		return ErrRunning
	case phaseStopping, phaseStopped:
		s.mu.Unlock()
		return ErrClosed
	}
	if s.pcr != nil {
		s.mu.Unlock()
		return errAwaitingDelta("Run")
	}
	s.phase = phaseRunning
	s.undo = nil // Reset does nothing from here on
	s.spawnLocked(s.schedule)
	for range s.opts.Workers {
		s.spawnLocked(s.runner)
	}
	s.mu.Unlock()

	select {
	case <-ctx.Done():
		s.hardStop()
	case <-s.quit:
	}
	// ctx still means "stop now" during a graceful Shutdown.
	s.join(ctx)
	s.mu.Lock()
	s.phase = phaseStopped
	s.mu.Unlock()
	s.baseCancel(ErrShutdown) // release the contexts' resources
	close(s.done)
	return nil
}

// hardStop begins stopping, if not begun, and cancels every run.
func (s *Supervisor) hardStop() {
	s.mu.Lock()
	s.beginStopLocked()
	s.hardStopLocked()
	s.mu.Unlock()
}

// Shutdown stops the supervisor gracefully: nothing new is dispatched,
// loops are cancelled (with ErrShutdown) as they never end on their own,
// and periodic runs in flight are waited for. It returns nil once Run has
// joined every goroutine. If ctx ends first, it cancels every run's
// context and returns ctx.Err(); Run still waits for the runs to return.
// Runs that do not return within Options.StopTimeout of their cancellation
// are abandoned, as Run says. Shutdown before Run just closes the
// supervisor. It is safe to call more than once and from several
// goroutines. The tasks' state stays readable:
// Capture after Shutdown writes it, a run stopped by the deadline marked
// to run again.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	switch s.phase {
	case phaseNew:
		s.phase = phaseStopped
		close(s.done)
		s.mu.Unlock()
		return nil
	case phaseRunning:
		s.beginStopLocked()
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		s.hardStopLocked()
		s.mu.Unlock()
		return ctx.Err()
	}
}

// beginStopLocked moves a running supervisor to stopping: no more
// dispatch, loops asked to stop.
func (s *Supervisor) beginStopLocked() {
	if s.phase != phaseRunning {
		return
	}
	s.phase = phaseStopping
	s.sleepUntil = math.MinInt64
	for _, t := range s.all {
		if cancel := t.c().cancel; t.status == StatusRunning && cancel != nil && !t.cutOff {
			t.interrupted = true
			cancel(ErrShutdown)
			s.startStopClockLocked(t)
		}
	}
	close(s.quit)
}

// hardStopLocked cancels every run still in flight. Their results are
// dropped and they are marked to run again, as a freeze cut-off would.
func (s *Supervisor) hardStopLocked() {
	s.cutOffLocked(ErrShutdown)
	s.pokeJoin() // the runs' stop bounds are set: Run's join times them
}

// cutOffLocked gives up on every run in flight: their contexts are
// cancelled with cause, their results will be dropped, and they run again
// (keeping their sequence numbers, marked as possible duplicates) after
// Thaw or Restore. Their stop bounds start. It returns how many.
func (s *Supervisor) cutOffLocked(cause error) int {
	n := 0
	cut := func(r *task) {
		if r.cutOff {
			return
		}
		r.cutOff = true
		n++
		if cancel := r.c().cancel; cancel != nil {
			cancel(cause)
		}
		// The run may have done some or all of its work, or go on
		// doing it: the run again under its number may repeat it.
		s.setMaybeDupLocked(r, true)
		s.startStopClockLocked(r)
	}
	for _, t := range s.all {
		s.eachRunLocked(t, cut)
	}
	for _, t := range s.removing {
		s.eachRunLocked(t, func(r *task) {
			if cancel := r.c().cancel; cancel != nil {
				cancel(cause)
			}
			s.startStopClockLocked(r)
		})
	}
	s.genCancel(cause)
	s.genCtx, s.genCancel = context.WithCancelCause(s.baseCtx)
	s.totals.cutOff += uint64(n)
	return n
}

// signal pokes the scheduler without blocking.
func (s *Supervisor) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// setStatusLocked moves t to st, keeping the per-status counts.
func (s *Supervisor) setStatusLocked(t *task, st Status) {
	if !t.removed {
		s.counts[t.status]--
		s.counts[st]++
	}
	t.status = st
	s.markLocked(t)
}

// pushLocked queues t and wakes the scheduler if t is due before the time
// it sleeps until.
func (s *Supervisor) pushLocked(t *task) {
	if s.q.needsCompact(len(s.all)) {
		// Stale entries (removed, paused, requeued tasks) are dropped
		// when popped, which for tasks due in an hour is in an hour:
		// under churn, drop them now. O(n), once per n pushes.
		s.q.compact(s.all)
	}
	due := t.due
	if ov := t.c().ov; t.multi() && (t.runNow || ov != nil && len(ov.pending) > 0) {
		// A pending or asked-for run of a multi task does not move its
		// schedule: it is queued for now, its due time kept.
		due = min(due, s.mono(s.opts.now()))
	}
	s.q.push(t, due)
	if due < s.sleepUntil {
		s.sleepUntil = due
		s.signal()
	}
}

// runnableLocked reports whether t, just popped from the queue, is to be
// dispatched: not a stale entry (nil), not removed, and, for a multi task,
// allowed to start another run.
func (s *Supervisor) runnableLocked(t *task) bool {
	return t != nil && !t.removed && (!t.multi() || s.canStartLocked(t))
}

// dispatchLocked marks t, just popped from the queue, as running and
// returns its job.
func (s *Supervisor) dispatchLocked(t *task) job {
	if t.multi() {
		return s.dispatchRunLocked(t)
	}
	s.inflight++
	s.setStatusLocked(t, StatusRunning)
	t.rerun = t.maybeDup
	t.extra, t.runNow, t.retryExtra = t.runNow || t.retryExtra, false, false
	if t.loop() {
		var ctx context.Context
		ctx, t.coldLocked().cancel = context.WithCancelCause(s.baseCtx)
		return job{t: t, ctx: ctx}
	}
	// Periodic runs share one context: one fewer allocation per run, and
	// the freeze bound and the hard stop cancel them all at once anyway.
	return job{t: t, ctx: s.genCtx}
}

// schedule is the scheduler goroutine: it sleeps until the earliest due
// time and hands due tasks to idle runners.
func (s *Supervisor) schedule() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.phase != phaseRunning {
			s.mu.Unlock()
			return
		}
		wait := s.dispatchDueLocked()
		s.mu.Unlock()
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-s.wake:
		case <-s.quit:
			return
		}
	}
}

// dispatchDueLocked sends due tasks to idle runners and returns how long
// to sleep before the next one is due, or -1 to sleep until poked.
func (s *Supervisor) dispatchDueLocked() time.Duration {
	s.starved = false
	s.sleepUntil = math.MinInt64
	if s.frozen {
		return -1 // Thaw pokes.
	}
	now := s.mono(s.opts.now())
	for s.q.len() > 0 {
		if due := s.q.peek().due; due > now {
			s.sleepUntil = due
			return time.Duration(wakeAt(due, int64(s.opts.Resolution)) - now)
		}
		if t := s.q.top(s.all); s.idle == 0 && t != nil && !t.loop() {
			s.starved = true // the next runner to go idle pokes.
			return -1
		}
		t := s.q.pop(s.all)
		if !s.runnableLocked(t) {
			continue
		}
		j := s.dispatchLocked(t)
		if t.loop() {
			s.spawnLocked(func() { s.runLoop(j) })
			continue
		}
		s.idle--
		// This send never blocks: each job takes an idle runner, so at
		// most Workers jobs are queued, and the channel holds Workers.
		s.work <- j
	}
	s.sleepUntil = math.MaxInt64 // empty: any push wakes
	return -1
}

// runner executes jobs until the work channel closes.
func (s *Supervisor) runner() {
	var (
		j       job
		running bool
		// r is the handle of this runner's runs, valid only while one
		// is in flight (see Run).
		r = &Run{s: s}
	)
	defer func() {
		if running {
			// Only runtime.Goexit in a run gets here: panics are
			// recovered in call. Count the run as failed and replace
			// this goroutine so the pool keeps its size.
			s.goexit(j, true)
			s.mu.Lock()
			s.spawnLocked(s.runner)
			s.mu.Unlock()
		}
	}()
	for {
		select {
		case j = <-s.work:
		case <-s.quit:
			s.mu.Lock()
			s.drainWorkLocked()
			s.mu.Unlock()
			return
		}
		for ok := true; ok; {
			running = true
			j, ok = s.execute(j, r, true)
			running = false
		}
	}
}

// drainWorkLocked puts jobs that were dispatched but not started when the
// supervisor stopped back in the queue, as if never dispatched. No job is
// sent once quit is closed, so one pass empties the channel.
func (s *Supervisor) drainWorkLocked() {
	for {
		select {
		case j := <-s.work:
			if !j.t.removed {
				j.t.cutOff = true // requeue with due time and sequence kept
				// It never started: a hard stop's cut-off that marked it
				// a possible duplicate was wrong.
				s.setMaybeDupLocked(j.t, j.t.rerun)
			}
			now := s.opts.now()
			s.finishLocked(j, nil, false, now, now, true, false)
		default:
			return
		}
	}
}

// runLoop is the goroutine of one loop run. Loops get their own goroutine
// rather than a runner: a loop is one long call, and loops holding every
// runner would starve the periodic tasks.
func (s *Supervisor) runLoop(j job) {
	running := true
	defer func() {
		if running {
			s.goexit(j, false)
		}
	}()
	s.execute(j, &Run{s: s}, false)
	running = false
}

// goexit records the run of j as failed after it called runtime.Goexit,
// which no recover stops.
func (s *Supervisor) goexit(j job, runner bool) {
	s.mu.Lock()
	now := s.opts.now()
	s.finishLocked(j, errGoexit, false, now, now, runner, false)
	s.mu.Unlock()
	s.log.Error("worker: run called runtime.Goexit", "task", j.t.id)
}

// execute performs one run, with r as its handle. On a runner it returns
// the next due periodic task if the runner should take it at once.
func (s *Supervisor) execute(j job, r *Run, runner bool) (job, bool) {
	t := j.t
	start := s.opts.now()
	if s.awaitFirst.Load() && s.awaitFirst.CompareAndSwap(true, false) {
		s.firstStart.Store(start.UnixNano())
	}
	if s.m != nil {
		s.m.lag.Observe(max(0, time.Duration(s.mono(start)-t.due)).Seconds())
	}
	r.t = t
	err, panicked := s.call(j.ctx, t, r)
	end := s.opts.now()
	if s.m != nil {
		s.m.duration.Observe(end.Sub(start).Seconds())
	}
	s.mu.Lock()
	seq := t.runs + 1
	next, ok, retry := s.finishLocked(j, err, panicked, start, end, runner, runner)
	consecutive := t.owner().c().consecutive
	s.mu.Unlock()
	if retry >= 0 {
		s.logFailure(t.id, seq, err, consecutive, retry)
	}
	return next, ok
}

// call runs the task's function, turning a panic into a *PanicError.
func (s *Supervisor) call(ctx context.Context, t *task, r *Run) (err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			err, panicked = &PanicError{Value: v, Stack: debug.Stack()}, true
		}
	}()
	if d := t.spec.Timeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, ErrTimeout)
		defer cancel()
	}
	return t.spec.Run(ctx, r), false
}

// finishLocked records the end of t's run, which started at start. When
// called from a runner, it makes the runner idle again or, with chain set,
// hands it the next due periodic task (starting due loops on their own
// goroutines on the way). retry is the backoff of a counted failure, or -1.
func (s *Supervisor) finishLocked(j job, err error, panicked bool, start, end time.Time, runner, chain bool) (next job, ok bool, retry time.Duration) {
	t := j.t
	s.inflight--
	s.markLocked(t)
	if c := t.cold; c != nil {
		if c.cancel != nil {
			c.cancel(nil) // release the loop's context
			c.cancel = nil
		}
		c.stopBy = 0
	}
	if t.abandoned {
		t.abandoned = false
		s.stuck-- // its goroutine is no longer in the run
	}
	retry = s.settleLocked(t, err, panicked, start, end)
	if s.inflight == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	if !runner {
		return job{}, false, retry
	}
	next, ok = s.releaseRunnerLocked(chain, s.mono(end))
	return next, ok, retry
}

// settleLocked decides what comes after t's run: nothing for a removed
// task, the same run again for a cut-off one, a restart for an
// interrupted loop, otherwise the run is counted. It returns the backoff
// of a counted failure, or -1.
func (s *Supervisor) settleLocked(t *task, err error, panicked bool, start, end time.Time) time.Duration {
	if t.isRecord() {
		return s.settleRecordLocked(t, err, panicked, end)
	}
	switch {
	case t.removed:
		s.releaseRemovedLocked(t)
	case t.cutOff:
		// Abandoned by the freeze bound or a hard stop: the snapshot says
		// it runs again, so it does here too after Thaw; keep its due
		// time and sequence number.
		t.cutOff, t.interrupted = false, false
		t.runNow = t.extra
		s.requeueLocked(t, StatusIdle)
	case t.interrupted:
		// A loop stopped by freeze or shutdown: restart it from its
		// checkpoint as soon as dispatch resumes. Not a run of its own.
		t.interrupted = false
		t.due, t.jit = s.mono(end), 0
		s.requeueLocked(t, StatusIdle)
	default:
		return s.countRunLocked(t, err, panicked, start, end)
	}
	return -1
}

// releaseRemovedLocked forgets the finished run of a removed task and
// queues the task re-added under its ID, which waited for that run.
func (s *Supervisor) releaseRemovedLocked(t *task) {
	if s.removing[t.id] != t {
		return
	}
	delete(s.removing, t.id)
	if nt := s.byID.get(s.all, t.id); nt != nil && nt.held {
		nt.held = false
		s.pushLocked(nt)
	}
}

// countRunLocked counts a run that finished, and queues the task's next
// run: a retry after a failure, the next schedule point after a periodic
// success. A loop that returned nil is done, a one-off task that succeeded
// is removed, a periodic task past its End is done. It returns the retry
// backoff, or -1.
func (s *Supervisor) countRunLocked(t *task, err error, panicked bool, start, end time.Time) time.Duration {
	retry := s.tallyLocked(t, err, panicked, end)
	s.setMaybeDupLocked(t, false) // the next run has a new number
	if retry >= 0 {
		t.due = s.mono(end) + int64(retry)
		t.jit = 0
		t.retryExtra = t.extra // a failed RunNow's retry is still one
		s.requeueLocked(t, StatusBackoff)
		return retry
	}
	switch {
	case t.loop():
		s.setStatusLocked(t, StatusDone)
		return -1
	case t.oneOff():
		s.dropLocked(t) // done: a one-off task runs once
		return -1
	case t.extra:
		// RunNow's run: the schedule carries on as if it had not been.
		t.due = t.nominal + t.jit
		s.requeueLocked(t, StatusIdle)
		return -1
	}
	// Jitter is not lateness: measure the start against the schedule
	// point, not against the jittered due time.
	sl := s.nextSlotFor(t, s.mono(start)-t.jit, s.mono(end))
	s.totals.skipped += sl.skipped
	t.nominal = sl.next
	if s.pastEnd(t, t.nominal) {
		s.setStatusLocked(t, StatusDone)
		return -1
	}
	t.jit = jitter(t.spec.Jitter)
	t.due = t.nominal + t.jit
	if t.due < sl.notBefore {
		t.due, t.jit = sl.notBefore, 0 // catching up: spaced, not a burst
	}
	s.requeueLocked(t, StatusIdle)
	return -1
}

// tallyLocked counts t's run that ended at end, with its error, and
// returns the backoff before the next start after a failure, or -1.
func (s *Supervisor) tallyLocked(t *task, err error, panicked bool, end time.Time) time.Duration {
	s.lastFinish = end.UnixNano()
	t.lastRun = s.lastFinish
	t.runs++
	s.totals.runs++
	if err == nil {
		if c := t.cold; c != nil {
			c.consecutive = 0
		}
		return -1
	}
	c := t.coldLocked()
	c.failures++
	c.consecutive++
	s.totals.failures++
	if panicked {
		s.totals.panics++
	}
	c.lastErr = truncateError(err.Error())
	return backoff(c.consecutive, s.opts.InitialBackoff, s.opts.MaxBackoff)
}

// requeueLocked moves t, whose run ended, to st and queues it, unless it
// was paused meanwhile; a RunNow that came during the run makes it due now.
func (s *Supervisor) requeueLocked(t *task, st Status) {
	if t.paused && !t.runNow {
		s.setStatusLocked(t, StatusPaused)
		return
	}
	if now := s.mono(s.opts.now()); t.runNow && t.due > now {
		t.due = now
	}
	s.setStatusLocked(t, st)
	s.pushLocked(t)
}

// releaseRunnerLocked hands a runner that finished a run, at now, the next
// due periodic task when chain is set (starting due loops on their own
// goroutines on the way), or makes it idle again.
func (s *Supervisor) releaseRunnerLocked(chain bool, now int64) (job, bool) {
	for chain && s.phase == phaseRunning && !s.frozen && s.q.len() > 0 && s.q.peek().due <= now {
		nt := s.q.pop(s.all)
		if !s.runnableLocked(nt) {
			continue
		}
		nj := s.dispatchLocked(nt)
		if !nj.t.loop() {
			return nj, true
		}
		s.spawnLocked(func() { s.runLoop(nj) })
	}
	s.idle++
	if s.starved {
		s.starved = false
		s.signal()
	}
	return job{}, false
}

func (s *Supervisor) logFailure(id string, seq uint64, err error, consecutive uint64, retry time.Duration) {
	if pe, ok := errors.AsType[*PanicError](err); ok {
		s.log.Error("worker: run panicked", "task", id, "seq", seq, "panic", fmt.Sprint(pe.Value),
			"failures", consecutive, "retry_in", retry, "stack", string(pe.Stack))
		return
	}
	s.log.Warn("worker: run failed", "task", id, "seq", seq, "err", err,
		"failures", consecutive, "retry_in", retry)
}
