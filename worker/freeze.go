package worker

import (
	"context"
	"io"
	"math"
	"time"

	"github.com/batonhq/baton/state"
)

// SnapshotVersion is the version of the snapshot format that Capture writes
// and Restore reads, the Version of the supervisor's Participant. Capture
// writes format 3 (pending runs of OverlapAllow tasks) only when there are
// such runs, so that a release that reads version 2 restores the rest;
// see snapshot.go.
const SnapshotVersion = 2

// Register registers the supervisor's Participant in reg, with the step
// that lets it read the snapshots of a release that wrote version 1 (they
// are read as they are: the bytes say their version).
func (s *Supervisor) Register(reg *state.Registry) error {
	if err := reg.AddMigration(s.opts.Name, 1, 2, func(b []byte) ([]byte, error) { return b, nil }); err != nil {
		return err
	}
	return reg.Register(s.Participant())
}

// Participant returns the supervisor as a section of an upgrade snapshot,
// named Options.Name. Register it before Restore is due to be called;
// Register does, and also reads the previous snapshot version. Its Reset
// undoes a Restore when a later section of the snapshot fails, which
// spares the registry a capture of every task before the Restore.
//
// Its PreCopy moves the tasks in rounds when there are enough of them
// (2000, orphans included) for the round trips to pay: a first copy taken
// while the tasks run, a slice of them per hold of the lock, then, still
// running, the middle rounds the upgrader asks for, each the tasks that
// changed during the round before (ran, checkpointed, paused, added,
// removed, ...), and after Freeze only the tasks that changed since the
// last of them, so that the pause grows with the rate of change rather
// than with the number of tasks. In the new process the supervisor
// refuses Run, Capture and Restore (ErrPreCopyIncomplete) until the last
// round; Reset undoes them all.
func (s *Supervisor) Participant() state.Participant {
	return state.Participant{
		Name:    s.opts.Name,
		Version: SnapshotVersion,
		Freeze:  s.Freeze,
		Thaw:    s.Thaw,
		Capture: s.Capture,
		Restore: s.Restore,
		Reset:   s.Reset,
		PreCopy: s.preCopy(),
	}
}

// Freeze stops dispatching and waits for the runs in flight, so that the
// tasks' state stops changing before Capture. Loops are asked to stop at
// once (their context is cancelled with ErrFrozen): they are expected to
// checkpoint and return, and are restarted from that checkpoint.
//
// The wait is bounded by Options.FreezeTimeout and by ctx. A run still in
// flight at the bound is cut off: its context is cancelled with ErrCutOff,
// its later checkpoints are refused, its result is dropped, and the
// snapshot records it to run again, with the same sequence number, after
// Restore (or Thaw), marked as a possible duplicate (Run.MaybeDuplicate).
// Such a run is executed at least once rather than exactly once; every
// other run is executed exactly once across the upgrade. If it ignores
// its context, the Shutdown that follows an upgrade abandons it once
// Options.StopTimeout has passed since the cut-off.
//
// Freeze returns nil once the state is frozen, which it always is on
// return; calling it again while frozen does nothing. It works in every
// phase, before Run and after Shutdown included.
func (s *Supervisor) Freeze(ctx context.Context) error {
	start := time.Now()
	s.mu.Lock()
	if s.frozen {
		s.mu.Unlock()
		return nil
	}
	s.frozen = true
	s.sleepUntil = math.MinInt64
	for _, t := range s.all {
		if cancel := t.c().cancel; t.status == StatusRunning && cancel != nil && !t.cutOff {
			t.interrupted = true
			cancel(ErrFrozen)
			s.startStopClockLocked(t)
		}
	}
	drained := s.drained
	if s.inflight > 0 && drained == nil {
		drained = make(chan struct{})
		s.drained = drained
	}
	s.mu.Unlock()

	if drained != nil {
		timer := time.NewTimer(s.opts.FreezeTimeout)
		defer timer.Stop()
		select {
		case <-drained:
		case <-timer.C:
			s.cutOffFrozen()
		case <-ctx.Done():
			s.cutOffFrozen()
		}
	}
	if s.m != nil {
		s.m.freeze.Observe(time.Since(start).Seconds())
	}
	return nil
}

// cutOffFrozen cuts off the runs still in flight at the freeze bound.
func (s *Supervisor) cutOffFrozen() {
	s.mu.Lock()
	var ids []string
	for _, t := range s.all {
		if t.status == StatusRunning && !t.cutOff && len(ids) < 10 {
			ids = append(ids, t.id)
		}
	}
	n := s.cutOffLocked(ErrCutOff)
	s.drained = nil
	s.mu.Unlock()
	if n > 0 {
		s.log.Warn("worker: freeze bound reached; runs cut off will run again after restore or thaw",
			"cut_off", n, "first_ids", ids, "freeze_timeout", s.opts.FreezeTimeout)
	}
}

// Thaw resumes dispatching after Freeze, when the upgrade was abandoned.
// Tasks that came due while frozen run according to their Policy, loops
// restart from their checkpoints, and runs that were cut off run again. It
// does nothing when the supervisor is not frozen.
func (s *Supervisor) Thaw() {
	s.mu.Lock()
	if !s.frozen {
		s.mu.Unlock()
		return
	}
	s.frozen = false
	s.mu.Unlock()
	s.signal()
}

// Capture writes every task's progress to w in the binary format described
// in snapshot.go: schedule (as wall-clock times), run counts, backoff, last
// error and checkpointed state, plus the supervisor's totals and the state
// of tasks kept from the last Restore without a registration.
//
// Call it after Freeze. Without Freeze it still writes a consistent
// snapshot, with the runs in flight marked to run again, but it holds the
// supervisor's lock while it writes, which pauses the scheduler.
func (s *Supervisor) Capture(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pcr != nil {
		return errAwaitingDelta("Capture")
	}
	return s.captureLocked(w)
}

// Handoff reports the pause in the work across an upgrade.
type Handoff struct {
	// Restored is set once Restore has loaded a snapshot.
	Restored bool `json:"restored"`
	// LastRunBeforeFreeze is when the last run finished in the process
	// that wrote the snapshot; zero if it finished none.
	LastRunBeforeFreeze time.Time `json:"last_run_before_freeze"`
	// FirstRunAfterRestore is when this process started its first run
	// after Restore; zero until then.
	FirstRunAfterRestore time.Time `json:"first_run_after_restore"`
}

// Pause returns the time from the old process's last finished run to this
// process's first started run, or zero if either is unknown.
func (h Handoff) Pause() time.Duration {
	if h.LastRunBeforeFreeze.IsZero() || h.FirstRunAfterRestore.IsZero() {
		return 0
	}
	return h.FirstRunAfterRestore.Sub(h.LastRunBeforeFreeze)
}

// Handoff returns the work pause of the last Restore. It is cheap.
func (s *Supervisor) Handoff() Handoff {
	s.mu.Lock()
	h := Handoff{Restored: s.restored}
	if s.prevLastFinish != 0 {
		h.LastRunBeforeFreeze = time.Unix(0, s.prevLastFinish)
	}
	s.mu.Unlock()
	if ns := s.firstStart.Load(); ns != 0 {
		h.FirstRunAfterRestore = time.Unix(0, ns)
	}
	return h
}
