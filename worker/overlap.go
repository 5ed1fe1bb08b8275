package worker

import (
	"cmp"
	"slices"
	"time"
)

// This file holds the runs of tasks that may have several in flight: an
// OverlapAllow task, and a task restored with cut-off runs of one. Each
// run is a run record, a task of its own for that run (its sequence
// number in runs, its cut-off and stop bound), so that the
// dispatch, finish, cut-off and abandon paths of single runs serve it too.
// The task itself (the parent) keeps the schedule, the counts and the
// state; it stays queued at its next schedule point while it has fewer
// runs in flight than its bound.
//
// Sequence numbers are given when a run starts. Every number handed out
// is a finished run (counted in the parent's runs), a run in flight, or a
// pending one (cut off, to run again under its number), so the next new
// number is runs + len(inflight) + len(pending) + 1, in this process and,
// as the snapshot carries the pending numbers, in the next.

// overlapRuns is what a parent and its run records share.
type overlapRuns struct {
	parent   *task
	inflight []*task      // run records dispatched and not finished
	pending  []pendingRun // cut-off runs to run again, by sequence number
}

// pendingRun is a cut-off run waiting to run again.
type pendingRun struct {
	seq uint64
	// dup says that it had started: the run again may repeat its work
	// (Run.MaybeDuplicate).
	dup bool
}

// owner returns the task a run record runs for, or t itself.
func (t *task) owner() *task {
	if ov := t.c().ov; ov != nil {
		return ov.parent
	}
	return t
}

// isRecord reports whether t is a run record.
func (t *task) isRecord() bool { ov := t.c().ov; return ov != nil && ov.parent != t }

// multi reports whether t's runs go through run records.
func (t *task) multi() bool { return t.spec.Overlap == OverlapAllow || t.c().ov != nil }

// bound returns how many runs t may have in flight.
func (t *task) bound() int {
	if t.spec.Overlap == OverlapAllow {
		return t.spec.MaxConcurrent
	}
	return 1
}

// runsOf returns the run state of parent t, made on first use.
func (s *Supervisor) runsOf(t *task) *overlapRuns {
	c := t.coldLocked()
	if c.ov == nil {
		c.ov = &overlapRuns{parent: t}
		if s.multis == nil {
			s.multis = make(map[*task]struct{})
		}
		s.multis[t] = struct{}{}
	}
	return c.ov
}

// dropRunsLocked forgets the run state of parent t.
func (s *Supervisor) dropRunsLocked(t *task) {
	if t.cold != nil {
		t.cold.ov = nil
	}
	delete(s.multis, t)
}

// hasPendingLocked reports whether a registered task has runs that the
// next process must run again (in flight, or cut off), or an orphan's
// record has them.
func (s *Supervisor) hasPendingLocked() bool {
	for t := range s.multis {
		if ov := t.cold.ov; !t.removed && len(ov.pending)+len(ov.inflight) > 0 {
			return true
		}
	}
	for _, rec := range s.orphans {
		if rec.flags&flagPending != 0 {
			return true
		}
	}
	return false
}

// eachRunLocked calls f for each run of t in flight: t itself, or its run
// records.
func (s *Supervisor) eachRunLocked(t *task, f func(*task)) {
	if ov := t.c().ov; ov != nil {
		for _, r := range ov.inflight {
			f(r)
		}
		return
	}
	if t.status == StatusRunning {
		f(t)
	}
}

// canStartLocked reports whether multi task t, just popped from the
// queue, may start a run now.
func (s *Supervisor) canStartLocked(t *task) bool {
	ov := s.runsOf(t)
	if len(ov.inflight) >= t.bound() {
		return false // a run that ends queues it again
	}
	return len(ov.pending) > 0 || t.runNow || t.spec.Overlap == OverlapAllow && !s.pastEnd(t, t.nominal)
}

// dispatchRunLocked starts a run record for multi task t, popped from the
// queue, and queues t again for its next run if its bound allows. The run
// is the first pending one, else RunNow's, else the one for t's schedule
// point, which moves the schedule on.
func (s *Supervisor) dispatchRunLocked(t *task) job {
	ov := s.runsOf(t)
	now := s.mono(s.opts.now())
	r := &task{id: t.id, spec: t.spec, cold: &coldTask{ov: ov}, status: StatusRunning, due: t.due,
		stateP: t.stateP, stateLen: t.stateLen, stateGen: t.stateGen}
	switch {
	case len(ov.pending) > 0:
		p := ov.pending[0]
		ov.pending = slices.Delete(ov.pending, 0, 1)
		r.runs, r.rerun, r.maybeDup = p.seq-1, p.dup, p.dup
		r.due, r.extra = now, true // its point was served when it first ran
	default:
		r.runs = t.runs + uint64(len(ov.inflight))
		if t.runNow {
			t.runNow, r.extra, r.due = false, true, now
		} else {
			s.advanceLocked(t, now)
		}
	}
	ov.inflight = append(ov.inflight, r)
	s.inflight++
	s.setStatusLocked(t, StatusRunning)
	s.updateDupLocked(t)
	s.requeueRunsLocked(t)
	return job{t: r, ctx: s.genCtx}
}

// advanceLocked moves the schedule of t, whose run for its point starts at
// now, to the next point, as a finished run does for a task of one run.
func (s *Supervisor) advanceLocked(t *task, now int64) {
	sl := s.nextSlotFor(t, now-t.jit, now)
	s.totals.skipped += sl.skipped
	t.nominal = sl.next
	t.jit = jitter(t.spec.Jitter)
	t.due = t.nominal + t.jit
	if t.due < sl.notBefore {
		t.due, t.jit = sl.notBefore, 0
	}
}

// requeueRunsLocked queues multi task t for its next run, if it may start
// one: below its bound, not paused, with a run pending, asked for, or
// scheduled. Otherwise it sets t's status for what is left: running,
// paused or done. A task that is not OverlapAllow goes back to one run at
// a time once its restored runs are done.
func (s *Supervisor) requeueRunsLocked(t *task) {
	if t.removed {
		return
	}
	ov := s.runsOf(t)
	busy := len(ov.inflight)
	if t.spec.Overlap != OverlapAllow && busy == 0 && len(ov.pending) == 0 {
		s.dropRunsLocked(t)
		s.requeueLocked(t, t.idleStatus())
		return
	}
	switch {
	case t.paused && !t.runNow:
		if busy == 0 {
			s.setStatusLocked(t, StatusPaused)
		}
		return
	case busy >= t.bound():
		return
	}
	if !s.canStartLocked(t) {
		if busy == 0 {
			s.setStatusLocked(t, StatusDone) // past its End
		}
		return
	}
	if busy == 0 {
		s.setStatusLocked(t, t.idleStatus())
	}
	s.pushLocked(t)
}

// idleStatus is the status of a task waiting for its next run.
func (t *task) idleStatus() Status {
	if t.c().consecutive > 0 {
		return StatusBackoff
	}
	return StatusIdle
}

// settleRecordLocked is settleLocked for run record r: the run is counted
// for its parent, or kept pending when cut off, or forgotten when the
// parent was removed; then the parent is queued again.
func (s *Supervisor) settleRecordLocked(r *task, err error, panicked bool, end time.Time) time.Duration {
	ov := r.cold.ov
	t := ov.parent
	if i := slices.Index(ov.inflight, r); i >= 0 {
		ov.inflight = slices.Delete(ov.inflight, i, i+1)
	}
	if t.removed {
		if len(ov.inflight) == 0 {
			s.releaseRemovedLocked(t)
		}
		return -1
	}
	retry := time.Duration(-1)
	if r.cutOff {
		p := pendingRun{seq: r.runs + 1, dup: r.maybeDup}
		i, _ := slices.BinarySearchFunc(ov.pending, p.seq, func(p pendingRun, seq uint64) int { return cmp.Compare(p.seq, seq) })
		ov.pending = slices.Insert(ov.pending, i, p)
	} else {
		retry = s.countRecordLocked(t, err, panicked, end)
	}
	s.updateDupLocked(t)
	s.requeueRunsLocked(t)
	return retry
}

// countRecordLocked counts a finished run of multi task t. A failure
// holds t's next start for the backoff.
func (s *Supervisor) countRecordLocked(t *task, err error, panicked bool, end time.Time) time.Duration {
	retry := s.tallyLocked(t, err, panicked, end)
	if retry < 0 {
		return -1
	}
	if due := s.mono(end) + int64(retry); due > t.due {
		t.due, t.jit = due, 0
	}
	return retry
}

// updateDupLocked marks multi task t as a possible duplicate while one of
// its pending runs had started.
func (s *Supervisor) updateDupLocked(t *task) {
	dup := false
	for _, p := range t.cold.ov.pending {
		dup = dup || p.dup
	}
	s.setMaybeDupLocked(t, dup)
}

// pendingSeqs returns t's runs that the next process must run again,
// pending and in flight, by sequence number, each as seq<<1 | dup, the
// snapshot's encoding.
func (t *task) pendingSeqs() []uint64 {
	ov := t.c().ov
	if ov == nil || len(ov.pending)+len(ov.inflight) == 0 {
		return nil
	}
	out := make([]uint64, 0, len(ov.pending)+len(ov.inflight))
	for _, p := range ov.pending {
		out = append(out, packPending(p))
	}
	for _, r := range ov.inflight {
		// It has started, or is about to: running it again may repeat
		// its work.
		out = append(out, packPending(pendingRun{seq: r.runs + 1, dup: true}))
	}
	slices.Sort(out) // seq<<1 | dup sorts by seq
	return out
}

func packPending(p pendingRun) uint64 {
	v := p.seq << 1
	if p.dup {
		v |= 1
	}
	return v
}

// restorePendingLocked gives t, being restored, the pending runs of its
// record, checked by readSnapshot. A task that can no longer run them (a
// loop or a one-off now) counts them as skipped.
func (s *Supervisor) restorePendingLocked(t *task, packed []uint64) {
	s.dropRunsLocked(t)
	if len(packed) == 0 {
		return
	}
	if t.loop() || t.oneOff() {
		s.totals.skipped += uint64(len(packed))
		t.runs += uint64(len(packed)) // keep the numbers unique
		s.log.Warn("worker: task had cut-off runs of overlap allow and is no longer periodic; they are skipped",
			"task", t.id, "runs", len(packed))
		return
	}
	ov := s.runsOf(t)
	for _, v := range packed {
		ov.pending = append(ov.pending, pendingRun{seq: v >> 1, dup: v&1 != 0})
	}
	s.updateDupLocked(t)
}
