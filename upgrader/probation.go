package upgrader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
)

// The probation (Options.Probation), both sides. upgrader/PROTOCOL.md has
// the messages and what a rollback keeps and loses.
//
// Old process: from the new one's "serving" it stops accepting (its
// listening sockets stay open), marks its HTTP servers draining (a kept-alive
// connection ends after its next reply and reconnects to the new process),
// keeps its participants frozen and watches the new process through a pidfd,
// calling Options.HealthCheck at every ProbationChecks-th of the probation.
// If the new process exits, or fails a check (it is then killed), it accepts
// again at once and the upgrade fails at step "probation" with
// ErrRolledBack: the ordinary failure path thaws the participants. If the
// probation passes it sends "commit"; the new process then writes
// tableflip's ready byte and the upgrade completes as without a probation.
//
// New process: on a ready-go that carries a probation it freezes its own
// participants (its background tasks do not run: the old process still owns
// the state), opens its servers and says "serving"; Ready returns. On
// "commit" it writes the ready byte, thaws, and does what Ready does after
// the ready byte without a probation. If the old process dies first, it
// commits on its own: it holds the whole state.

// probationStep is the time between two health checks, and the bound of
// one: a ProbationChecks-th of the probation.
func (u *Upgrader) probationStep() time.Duration {
	return u.opts.Probation / ProbationChecks
}

// tableflipTimeout is tableflip's UpgradeTimeout: with a probation the ready
// byte comes only at its end, so tableflip waits for the probation (and its
// last check) on top; the session's own deadline keeps UpgradeTimeout for
// the part before the new process serves.
func tableflipTimeout(opts Options) time.Duration {
	t := opts.UpgradeTimeout
	if t <= 0 {
		t = DefaultUpgradeTimeout
	}
	if opts.Probation > 0 {
		t += 2 * opts.Probation
	}
	return t
}

// watchProbation runs the old process's side of a probation, from the new
// process's "serving" until the probation passes (it sends "commit"), the new
// process fails it (rollBack), or ctx ends (the attempt ended otherwise:
// stopped, or tableflip saw the new process exit first).
func (u *Upgrader) watchProbation(ctx context.Context, s *session, log *slog.Logger) {
	pid := s.childPid()
	start := time.Now()
	u.pauseListeners()
	u.setDraining(true)
	u.setOnProbation(true)
	defer u.setOnProbation(false)
	log.Info("probation started: this process stopped accepting and stands by",
		"child_pid", pid, "probation", u.opts.Probation)
	s.events(Event{Step: StepProbation, Pid: pid})

	proc, err := pidfd.Open(pid)
	if err != nil {
		// ErrNoProcess: it has exited already (and been reaped).
		u.rollBack(s, fmt.Errorf("%w: the new process exited", ErrRolledBack), log)
		return
	}
	defer proc.Close()
	step := u.probationStep()
	for i := 1; i <= ProbationChecks; i++ {
		wctx, cancel := context.WithDeadline(ctx, start.Add(time.Duration(i)*step))
		err := proc.Wait(wctx)
		cancel()
		if err == nil {
			u.rollBack(s, fmt.Errorf("%w: the new process exited", ErrRolledBack), log)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if u.opts.HealthCheck == nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, step)
		herr := u.opts.HealthCheck(cctx)
		cancel()
		if herr == nil && faultHealthFails(u.gen, s.attempt) {
			herr = errors.New("failed by fault injection")
		}
		if herr == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if proc.Exited() {
			u.rollBack(s, fmt.Errorf("%w: the new process exited", ErrRolledBack), log)
			return
		}
		u.rollBack(s, fmt.Errorf("%w: %w: %v", ErrRolledBack, ErrHealthCheck, herr), log)
		// Through the pidfd: the signal cannot reach another program.
		if err := proc.Signal(syscall.SIGKILL); err != nil {
			log.Warn("probation: killing the new process failed", "child_pid", pid, "err", err)
		}
		return
	}
	log.Info("probation passed: committing the upgrade", "child_pid", pid, "took", time.Since(start))
	if err := s.conn.send(message{Type: msgCommit, Attempt: s.attempt}, nil); err != nil {
		// The new process is gone or going: tableflip reports its exit.
		log.Warn("handoff: sending the commit failed", "err", err)
	}
}

// rollBack takes the service back from a new process that failed its
// probation: this process accepts again at once (the connections queued on
// the sockets meanwhile are accepted now), its servers stop saying
// "Connection: close", and the pid file names it. The participants thaw on
// the upgrade's failure path. The first reason is kept.
func (u *Upgrader) rollBack(s *session, reason error, log *slog.Logger) {
	u.resumeListeners()
	u.setDraining(false)
	if !s.setRollback(reason) {
		return
	}
	if err := u.rewritePIDFile(); err != nil {
		log.Warn("pid file not rewritten", "path", u.pidFile, "err", err)
	}
	log.Warn("probation failed: this process took the service back", "child_pid", s.childPid(), "reason", reason)
}

func (u *Upgrader) setDraining(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.servers {
		s.draining.Store(on)
	}
}

func (u *Upgrader) setOnProbation(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.onProbation = on
}

func (u *Upgrader) isOnProbation() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.onProbation
}

// readyOnProbation is Ready in a new process whose previous generation
// runs a probation: it holds the participants frozen, opens the servers,
// says "serving" and waits for the commit in the background.
func (u *Upgrader) readyOnProbation() error {
	// Until the commit the previous generation owns the state: a rollback
	// thaws what it holds. So nothing here may run work that the state
	// records (background tasks): it would run again after a rollback.
	ctx, cancel := context.WithTimeout(context.Background(), u.opts.StateFileTimeout)
	err := u.reg.Freeze(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("hold the state for the probation: %w", err)
	}
	fault(faultNewCrashLate, u.gen, u.startAttempt)
	u.mu.Lock()
	u.ready, u.onProbation = true, true
	u.mu.Unlock()
	u.readyOnce.Do(func() { close(u.readyC) })
	fault(faultNewCrashServing, u.gen, u.startAttempt)
	if err := u.parent.send(message{Type: msgServing, Attempt: u.startAttempt}, nil); err != nil {
		if !hungUp(err) || !u.parentDied() {
			return fmt.Errorf("%w: saying it serves: %w", ErrHandshake, err)
		}
		u.log.Warn("previous generation died before the probation: this process carries on with the state it received", "err", err)
		u.commit()
		return nil
	}
	u.log.Info("ready on probation: serving; the previous generation can take the service back until it commits",
		"probation", u.probation)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.awaitCommit()
	}()
	return nil
}

// awaitCommit waits in a new process on probation for the previous
// generation's commit, or its death (then this process, which holds the
// whole state, carries on alone). It returns without committing when the
// process stops.
func (u *Upgrader) awaitCommit() {
	for {
		m, _, err := u.parent.recv(nil)
		switch {
		case errors.Is(err, ErrHandshake):
			u.log.Warn("handoff: bad message while on probation", "err", err)
		case err != nil:
			if u.isClosed() {
				return
			}
			if hungUp(err) && u.parentDied() {
				u.log.Warn("previous generation died during the probation: this process carries on with the state it received")
				u.commit()
				return
			}
			u.log.Error("handoff: waiting for the commit failed; the previous generation will roll back", "err", err)
			return
		case m.Type == msgCommit && (m.Attempt == 0 || m.Attempt == u.startAttempt):
			u.commit()
			return
		default:
			u.log.Warn("handoff: unexpected message while on probation", "type", m.Type)
		}
	}
}

// commit ends a new process's probation: the ready byte (the previous
// generation's Upgrade completes and it drains), the participants thawed,
// and the rest of Ready.
func (u *Upgrader) commit() {
	if u.isClosed() {
		return
	}
	if err := u.signalReady(); err != nil && !u.parentDied() {
		u.log.Error("ready byte not written after the commit: the previous generation will roll back", "err", err)
		return
	}
	if err := u.reg.Thaw(); err != nil {
		u.log.Error("thaw after the probation: a participant panicked; the others were thawed", "err", err)
	}
	u.setOnProbation(false)
	u.log.Info("probation passed: this process owns the service")
	u.completeReady()
}

func (u *Upgrader) isClosed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed
}
