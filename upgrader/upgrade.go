package upgrader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Result describes a successful upgrade.
type Result struct {
	// Pid is the new process's pid.
	Pid int
	// Generation is the new process's generation.
	Generation int
	// Duration is the time from the trigger to the new process being ready:
	// with Options.Probation, to the end of the probation.
	Duration time.Duration
	// StateBytes is the size of the snapshot handed over: after a
	// pre-copy, of its last round, sent after the freeze.
	StateBytes int64
	// PreCopyBytes is the size of the rounds of a pre-copy handoff
	// (state.Participant.PreCopy) sent while this process ran, the first
	// and the middle ones together; zero without one.
	PreCopyBytes int64
	// PreCopyRounds is the number of those rounds: 1 for the first
	// alone, plus one per middle round.
	PreCopyRounds int
}

// Upgrade starts the binary now at the process's own path, hands it the
// listeners, and waits until it is ready or has failed. Only one upgrade
// runs at a time. On success the Exit channel is closed and the caller
// should Shutdown; on failure nothing has changed hands and the error, an
// *UpgradeError or one of ErrNotReady, ErrUpgradeInProgress, ErrUpgraded,
// ErrParentRunning, ErrProbation and ErrClosed, says why. Cancelling ctx
// kills the new process and fails the upgrade, unless the new process has
// already been allowed to become ready (see upgrader/PROTOCOL.md, the ready
// gate): then the upgrade completes, bounded by UpgradeTimeout. There is
// exactly one outcome: a new process that won is never killed, one that
// lost never becomes ready.
//
// With Options.Probation, Upgrade returns at the end of the probation, and
// ctx no longer matters once the new process was allowed to become ready:
// it returns an *UpgradeError wrapping ErrRolledBack if the new process
// failed the probation (this process serves on), and succeeds only once it
// passed.
//
// For the attempt, Upgrade sets BATON_HANDOFF (this process's pid, the new
// generation and the attempt number) in this process's own environment,
// and removes it when the attempt ends: tableflip gives the new process
// os.Environ as it is when it starts it, and no environment of its own.
// Code that reads the environment or starts processes during an upgrade
// sees the variable. upgrader/PROTOCOL.md describes it.
func (u *Upgrader) Upgrade(ctx context.Context) (Result, error) {
	return u.upgradeWithEvents(ctx, nil)
}

// upgradeWithEvents is Upgrade, reporting each step to events if not nil.
func (u *Upgrader) upgradeWithEvents(ctx context.Context, perCall func(Event)) (Result, error) {
	events := func(e Event) {
		u.emit(e)
		if perCall != nil {
			perCall(e)
		}
	}
	attempt, err := u.beginUpgrade()
	if err != nil {
		return Result{}, err
	}
	started := time.Now()
	id := fmt.Sprintf("%d-%d", os.Getpid(), attempt)
	u.history.setPending(&Record{ID: id, Started: started, FromPid: os.Getpid(), Generation: u.gen})
	events(Event{Step: StepStarted})
	res, err := u.upgrade(ctx, attempt, id, events)
	u.history.setPending(nil)
	rolledBack := errors.Is(err, ErrRolledBack)
	if err != nil {
		rec := Record{ID: id, Started: started, Duration: time.Since(started), Result: resultFailure,
			Reason: err.Error(), FromPid: os.Getpid(), Generation: u.gen}
		var ue *UpgradeError
		if errors.As(err, &ue) {
			rec.Step, rec.ToPid = ue.Step, ue.Pid
		}
		if rolledBack {
			rec.Result = resultRolledBack
			events(Event{Step: StepRolledBack, Pid: rec.ToPid, Error: err.Error()})
		}
		u.history.add(rec)
		events(Event{Step: StepFailed, Error: err.Error()})
	} else {
		events(Event{Step: StepChildReady, Pid: res.Pid})
		fault(faultOldKillAfterReady, u.gen, attempt)
	}

	u.mu.Lock()
	u.upgrading = false
	close(u.upgradeDone)
	if err == nil {
		u.upgraded = true
		// Sent with the final counts: the new process observes it, as a
		// scrape after the switch reaches it, not this one. Set before
		// exitC starts the drain that sends them.
		u.upgradeTook = res.Duration
		close(u.exitC)
	}
	u.mu.Unlock()
	if err != nil {
		// tableflip v1.2.3 does not close its copies of the pipe ends it
		// passed to a child; they are *os.Files, closed by their
		// finalizers. A collection now keeps a run of failed attempts
		// from holding two fds each until the next GC.
		runtime.GC()
		if rolledBack {
			u.counters.Counter(counterUpgradeRolledBack).Inc()
		} else {
			u.counters.Counter(counterUpgradeFailure).Inc()
		}
		var ue *UpgradeError
		if errors.As(err, &ue) {
			u.counters.Counter(counterFailureStep + ue.Step).Inc()
		}
	}
	return res, err
}

func (u *Upgrader) beginUpgrade() (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.closed:
		return 0, ErrClosed
	case u.upgraded:
		return 0, ErrUpgraded
	case u.onProbation:
		return 0, ErrProbation
	case u.upgrading:
		return 0, ErrUpgradeInProgress
	case !u.ready:
		return 0, ErrNotReady
	}
	if !u.parentExited() {
		return 0, ErrParentRunning
	}
	u.upgrading = true
	u.upgradeDone = make(chan struct{})
	u.attempt++
	return u.attempt, nil
}

// parentExited reports whether the previous generation has exited.
// tableflip learns it from a pipe that closes when the parent's files are
// released, a moment before the process is reaped and this one reparented;
// a trigger sent right after the parent was seen gone waits for that moment
// rather than failing.
func (u *Upgrader) parentExited() bool {
	select {
	case <-u.parentGone:
		return true
	default:
	}
	if u.parentPid == 0 || os.Getppid() == u.parentPid {
		return false
	}
	select {
	case <-u.parentGone:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// upgrade runs one attempt: it checks the binary, prepares the handoff
// socket and BATON_HANDOFF, starts the new process and serves it its side
// of the handoff until tableflip reports it ready or failed, then ends the
// freeze and says how the attempt went.
func (u *Upgrader) upgrade(ctx context.Context, attempt int, id string, events func(Event)) (Result, error) {
	start := time.Now()
	log := u.log.With("upgrade", id)
	log.Info("upgrade started")
	fail := func(step string, pid int, err error, status string) (Result, error) {
		ue := &UpgradeError{Pid: pid, Step: step, Err: err, ExitStatus: status, Elapsed: time.Since(start)}
		log.Error("upgrade failed", "step", step, "child_pid", pid, "err", ue)
		return Result{}, ue
	}

	// tableflip resolves os.Args[0] when it starts the child; checking first
	// gives a clear error for a missing or non-executable file.
	if path, err := exec.LookPath(os.Args[0]); err != nil {
		return fail("start", 0, fmt.Errorf("%w: %v", ErrStartFailed, err), "")
	} else {
		log.Info("starting new process", "path", path)
	}
	// Listeners opened outside the upgrader are looked for before the new
	// process starts, as they are what makes it fail with "address already
	// in use". (Run after a success instead, the check delayed Upgrade's
	// return past Exit: an application that exits once drained lost its
	// "upgraded" line, TestNothingLeaksIntoSubprocesses.)
	u.warnStrayListeners()

	sctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
	defer cancel()
	s := &session{u: u, ctx: sctx, conn: u.own, attempt: attempt, log: log, events: events, serving: make(chan struct{})}
	s.drainStale()
	if err := u.own.SetReadDeadline(time.Time{}); err != nil {
		return fail("start", 0, fmt.Errorf("%w: %v", ErrStartFailed, err), "")
	}
	// tableflip gives the child this process's environment as os.Environ
	// returns it when the child starts, and takes no other: the variable
	// is set in this process for the attempt, and removed after it. (New
	// removes the one this process was started with.)
	os.Setenv(envHandoff, handoffEnv{Version: handoffVersion, ParentPid: os.Getpid(), Generation: u.gen + 1, Attempt: attempt}.String())
	defer os.Unsetenv(envHandoff)

	err := u.runAttempt(ctx, s, log)
	pid, step := s.childPid(), s.step()
	stateBytes := u.endFreeze(s, err != nil, log)
	if err != nil {
		reason, status := attemptFailure(ctx, s, err)
		return fail(step, pid, reason, status)
	}
	s.mu.Lock()
	preBytes, preRounds := s.preBytes, s.preRounds
	s.mu.Unlock()
	res := Result{Pid: pid, Generation: u.gen + 1, Duration: time.Since(start), StateBytes: stateBytes,
		PreCopyBytes: preBytes, PreCopyRounds: preRounds}
	log.Info("upgrade succeeded: new process is ready", "child_pid", pid, "duration", res.Duration)
	return res, nil
}

// runAttempt starts the new process through tableflip and serves the
// session until tableflip's Upgrade returns: the new process is ready, or
// it failed, or ctx was cancelled and it was killed. With a probation, the
// probation runs in between (watchProbation), from the new process's
// "serving" to the ready byte it writes at the commit; the part before
// "serving" is bounded by the session's UpgradeTimeout. It returns
// Upgrade's error, and joins every goroutine it starts.
func (u *Upgrader) runAttempt(ctx context.Context, s *session, log *slog.Logger) error {
	flipped := make(chan error, 1)
	go func() { flipped <- u.tf.Upgrade() }()
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.serve()
	}()

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched, err := u.awaitFlip(ctx, watchCtx, s, log, flipped)
	stopWatch()
	if watched != nil {
		<-watched
	}
	u.endProbation(s, err, log)
	// Stop the session: any read in flight returns at once.
	u.own.SetReadDeadline(time.Unix(1, 0))
	<-served
	if err != nil {
		s.drainQueued()
	}
	return err
}

// awaitFlip waits for tableflip's Upgrade to return (flipped), starting the
// probation's watch (bounded by watchCtx) when the new process serves, and
// killing the new process when it is not serving in time or ctx is done
// before it was allowed to become ready. It returns the watch's done channel
// if one was started, and Upgrade's error, wrapped in ctx's if the caller
// called the attempt off.
func (u *Upgrader) awaitFlip(ctx, watchCtx context.Context, s *session, log *slog.Logger, flipped <-chan error) (chan struct{}, error) {
	var readyDeadline <-chan struct{}
	if u.opts.Probation > 0 {
		// tableflip's timeout covers the probation too.
		readyDeadline = s.ctx.Done()
	}
	var watched chan struct{}
	serving, ctxDone := s.serving, ctx.Done()
	cancelled := false
	for {
		select {
		case err := <-flipped:
			if cancelled && err != nil {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
			return watched, err
		case <-serving:
			serving, readyDeadline = nil, nil
			watched = make(chan struct{})
			go func() {
				defer close(watched)
				u.watchProbation(watchCtx, s, log)
			}()
		case <-readyDeadline:
			readyDeadline = nil
			if s.callOff() {
				s.mu.Lock()
				s.timedOut = true
				s.mu.Unlock()
				u.killChild(s, log, "new process not serving in time: killing it")
			}
		case <-ctxDone:
			ctxDone = nil
			if !s.callOff() {
				// The new process was told it may become ready: it has
				// won, and killing it now would leave nobody serving.
				// tableflip's own timeout still bounds the wait.
				log.Warn("upgrade deadline passed after the new process was allowed to become ready: waiting for it",
					"child_pid", s.childPid())
				continue
			}
			cancelled = true
			u.killChild(s, log, "upgrade cancelled: killing new process")
		}
	}
}

// endProbation settles an attempt that reached its probation: one that
// failed after the new process was allowed to serve is rolled back (this
// process accepts again), and a new process too old for a probation is
// logged.
func (u *Upgrader) endProbation(s *session, err error, log *slog.Logger) {
	if err != nil && s.granted() {
		// Whatever ended the attempt on probation (the new process died
		// before it served, tableflip saw the exit before the pidfd
		// watch did, or this process stops), this process serves on:
		// it accepts again.
		if reason, _ := classify(err); !errors.Is(reason, ErrClosed) {
			u.rollBack(s, fmt.Errorf("%w: the new process exited", ErrRolledBack), log)
		}
		u.resumeListeners()
		u.setDraining(false)
	}
	if err == nil && u.opts.Probation > 0 && !s.onProbation() {
		log.Warn("the new process does not support the probation (an older release): the upgrade is final at its ready")
	}
}

// killChild kills the new process of s, if it said hello, and logs why.
func (u *Upgrader) killChild(s *session, log *slog.Logger, why string) {
	if pid := s.childPid(); pid > 0 {
		log.Warn(why, "child_pid", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// endFreeze ends the freeze the session began, if it did: after a failed
// attempt the participants thaw and this process carries on; after a
// successful one they stay frozen for good. A pre-copy whose last round
// did not follow its first or middle rounds (the new process died, hung
// or rejected one; the freeze failed) has its tracking stopped. It returns the
// snapshot's size.
func (u *Upgrader) endFreeze(s *session, failed bool, log *slog.Logger) (stateBytes int64) {
	s.mu.Lock()
	frozen, frozenAt, stateBytes, preCopied := s.frozen, s.frozenAt, s.stateBytes, s.preCopied
	s.mu.Unlock()
	if preCopied {
		if err := u.reg.StopPreCopy(); err != nil {
			log.Error("stopping the pre-copy: a participant panicked; the others were stopped", "err", err)
		}
	}
	if !frozen {
		return stateBytes
	}
	if failed {
		if err := u.reg.Thaw(); err != nil {
			log.Error("thaw: a participant panicked; the others were thawed", "err", err)
		}
		log.Info("participants thawed: carrying on", "frozen_for", time.Since(frozenAt))
	}
	if u.metrics != nil {
		u.metrics.handoffPause.Observe(time.Since(frozenAt).Seconds())
		u.metrics.stateBytes.Set(float64(stateBytes))
	}
	return stateBytes
}

// attemptFailure says why an attempt that ended in err failed, and how the
// new process exited: the state's refusal or rejection first (what the new
// process did next is its consequence), then the timeout or cancellation
// of ctx, then tableflip's report.
func attemptFailure(ctx context.Context, s *session, err error) (reason error, exitStatus string) {
	if reason := s.rejected(); reason != "" {
		return fmt.Errorf("%w: %s", ErrStateRejected, reason), ""
	}
	reason, status := classify(err)
	if rb := s.rolledBack(); rb != nil {
		return rb, status
	}
	s.mu.Lock()
	timedOut := s.timedOut
	s.mu.Unlock()
	if ctx.Err() != nil {
		reason = fmt.Errorf("%w: %w", ErrReadyTimeout, ctx.Err())
	} else if timedOut {
		reason = ErrReadyTimeout
	}
	return reason, status
}
