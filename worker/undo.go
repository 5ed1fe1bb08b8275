package worker

import (
	"slices"
	"time"
)

// restoreUndo is what Reset needs to undo the last Restore. Restore keeps
// no copy of the tasks it gives progress to when they had none (the usual
// case: the tasks were just added): Reset gives them their first schedule
// again. Only the tasks that had progress before (a second Restore, an
// adopted orphan) are copied.
type restoreUndo struct {
	matched []*task // the tasks the Restore gave progress, nil entries aside
	saved   []savedTask
	created []*task // data tasks the Restore created
	orphans map[string]*record
	totals  totals
	// prevLastFinish, restored and awaitFirst as they were.
	prevLastFinish       int64
	restored, awaitFirst bool
	// next is what the first pre-copy delta applied on top of the
	// Restore adds to undo (the tasks it gave progress, saved and
	// created), and its next the second delta's, and so on.
	next *restoreUndo
}

type savedTask struct {
	t    *task
	v    task
	cold coldTask // *v.cold as it was, if v.cold is not nil
}

// saveTask returns a copy of t, its cold part included, for
// putBackLocked.
func saveTask(t *task) savedTask {
	sv := savedTask{t: t, v: *t}
	if t.cold != nil {
		sv.cold = *t.cold
	}
	return sv
}

// fresh reports whether t is as Add left it: no progress restored,
// adopted or made.
func (t *task) fresh() bool {
	return !t.progress && t.runs == 0 && t.c().failures == 0 && t.stateP == nil && !t.maybeDup && t.c().ov == nil
}

// newUndoLocked records what Reset needs to undo the Restore of plan,
// before it is applied.
func (s *Supervisor) newUndoLocked(plan *restorePlan) *restoreUndo {
	u := &restoreUndo{matched: plan.matched, orphans: s.orphans, totals: s.totals,
		prevLastFinish: s.prevLastFinish, restored: s.restored, awaitFirst: s.awaitFirst.Load()}
	for _, t := range plan.matched {
		if t != nil && !t.fresh() {
			u.saved = append(u.saved, saveTask(t))
		}
	}
	u.created = plan.creates
	return u
}

// Reset undoes the last Restore, for a state.Registry whose restore of a
// later section failed: the registry then undoes every section it
// restored, and the supervisor's Reset spares it a capture of every
// registered task before the Restore (at a million tasks, a second and
// the snapshot's size in memory). The tasks the Restore gave progress to
// are back as Add left them, their first run one interval from now (a
// periodic task's jitter drawn again); tasks that had progress before it
// get it back; the data tasks it created are gone, and the orphans and
// totals are those from before. Reset does nothing after Run has started,
// or when there is no Restore to undo; it undoes one Restore only.
func (s *Supervisor) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.undo
	s.undo = nil
	if u == nil || s.phase != phaseNew {
		return
	}
	s.pcr = nil
	s.staleLocked("a Reset replaced the tasks")
	var rounds []*restoreUndo
	for r := u; r != nil; r = r.next {
		rounds = append(rounds, r)
	}
	// The created data tasks first: a Restore's matched holds them too,
	// and the loop below skips them once removed.
	for _, r := range slices.Backward(rounds) {
		for i := len(r.created) - 1; i >= 0; i-- {
			if t := r.created[i]; !t.removed {
				s.dropLocked(t)
			}
		}
	}
	now := s.opts.now()
	for _, r := range rounds {
		for _, t := range r.matched {
			if t != nil && !t.removed {
				s.unrestoreLocked(t, now)
			}
		}
	}
	for _, r := range rounds {
		for _, sv := range r.saved {
			if !sv.t.removed {
				s.putBackLocked(sv)
			}
		}
	}
	s.orphans, s.totals = u.orphans, u.totals
	s.prevLastFinish, s.restored = u.prevLastFinish, u.restored
	s.awaitFirst.Store(u.awaitFirst)
	s.rebuildQueueLocked()
}

// putBackLocked gives sv.t back the copy of it saved before a Restore.
func (s *Supervisor) putBackLocked(sv savedTask) {
	s.counts[sv.t.status]--
	s.setMaybeDupLocked(sv.t, false)
	// Its position, its queue entry and its pre-copy bits are the
	// supervisor's bookkeeping of t now, not part of what was saved.
	idx, qseq, pc := sv.t.idx, sv.t.qseq, sv.t.pc
	*sv.t = sv.v
	if sv.t.cold != nil {
		*sv.t.cold = sv.cold
	}
	sv.t.idx, sv.t.qseq, sv.t.pc = idx, qseq, pc
	sv.t.maybeDup = false
	s.setMaybeDupLocked(sv.t, sv.v.maybeDup)
	if sv.t.c().ov != nil { // its cut-off runs, from before the Restore
		if s.multis == nil {
			s.multis = make(map[*task]struct{})
		}
		s.multis[sv.t] = struct{}{}
	}
	s.counts[sv.t.status]++
}

// savedOf returns the copy of t that u or the first of its next rounds
// saved: t as it was before the Restore and its deltas.
func (u *restoreUndo) savedOf(t *task) (savedTask, bool) {
	for ; u != nil; u = u.next {
		if i := slices.IndexFunc(u.saved, func(sv savedTask) bool { return sv.t == t }); i >= 0 {
			return u.saved[i], true
		}
	}
	return savedTask{}, false
}

// unrestoreLocked puts t back as Add left it, with its first schedule from
// now.
func (s *Supervisor) unrestoreLocked(t *task, now time.Time) {
	s.counts[t.status]--
	s.setMaybeDupLocked(t, false)
	s.dropRunsLocked(t) // the cut-off runs the Restore gave it
	var cold *coldTask
	if t.spec.decode != nil || t.c().specBytes != nil {
		cold = &coldTask{specBytes: t.c().specBytes}
	}
	*t = task{id: t.id, spec: t.spec, cold: cold, idx: t.idx, data: t.data,
		qseq: t.qseq, stateGen: t.stateGen + 1}
	s.scheduleFirstLocked(t, now)
	s.counts[t.status]++
}
