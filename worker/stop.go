package worker

import (
	"context"
	"slices"
	"time"
)

// This file holds the stop bound: how Run joins its goroutines, and gives
// up on a run that ignores its cancellation (Options.StopTimeout), so that
// such a run cannot hold the process, and the previous generation with it,
// for ever.

// maxAbandonedListed bounds the list that Abandoned returns; the total
// counts them all.
const maxAbandonedListed = 100

// An AbandonedRun is a run that did not return within Options.StopTimeout
// of its cancellation while the supervisor stopped, and that Run stopped
// waiting for. Its goroutine may still be running its code; its result is
// dropped. If it was cut off before a Capture, the snapshot marks it to run
// again as a possible duplicate (TaskInfo.MaybeDuplicate).
type AbandonedRun struct {
	// ID is the task's ID.
	ID string `json:"id"`
	// Seq is the run's sequence number.
	Seq uint64 `json:"seq"`
	// Cancelled is when the run's context was cancelled.
	Cancelled time.Time `json:"cancelled"`
	// Abandoned is when Run stopped waiting for it.
	Abandoned time.Time `json:"abandoned"`
}

// Abandoned returns the runs abandoned in this process, the first
// maxAbandonedListed (100) of them, oldest first; Stats.AbandonedTotal
// counts them all. It is empty unless Run has stopped with runs that
// ignored their cancellation.
func (s *Supervisor) Abandoned() []AbandonedRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.abandoned)
}

// spawnLocked starts f on a goroutine that Run joins.
func (s *Supervisor) spawnLocked(f func()) {
	s.live++
	go func() {
		defer s.exited()
		f()
	}()
}

// exited is the last thing a goroutine of the supervisor does.
func (s *Supervisor) exited() {
	s.mu.Lock()
	s.live--
	s.mu.Unlock()
	s.pokeJoin()
}

// pokeJoin wakes Run's join without blocking.
func (s *Supervisor) pokeJoin() {
	select {
	case s.joinPoke <- struct{}{}:
	default:
	}
}

// since returns the time since clock0 on the real monotonic clock.
func (s *Supervisor) since() int64 { return int64(time.Since(s.clock0)) }

// startStopClockLocked starts the stop bound of t's run in flight, whose
// context was just cancelled; a bound already started is kept.
func (s *Supervisor) startStopClockLocked(t *task) {
	c := t.coldLocked()
	if c.stopBy != 0 {
		return
	}
	c.stopBy = s.since() + int64(s.opts.StopTimeout)
	if s.minStopBy == 0 || c.stopBy < s.minStopBy {
		s.minStopBy = c.stopBy
	}
}

// setMaybeDupLocked sets whether t's next run repeats a run that was cut
// off, keeping dupCount.
func (s *Supervisor) setMaybeDupLocked(t *task, v bool) {
	if t.maybeDup == v {
		return
	}
	t.maybeDup = v
	s.markLocked(t)
	if t.removed || t.isRecord() {
		return // not counted: a record's parent is
	}
	if v {
		s.dupCount++
	} else {
		s.dupCount--
	}
}

// join waits, once stopping has begun, until every goroutine the
// supervisor started has returned or is stuck in an abandoned run. ctx
// done means a hard stop.
func (s *Supervisor) join(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	done := ctx.Done()
	for {
		s.mu.Lock()
		wait, abandoned := s.abandonOverdueLocked()
		joined := s.live == s.stuck
		s.mu.Unlock()
		s.logAbandoned(abandoned)
		if joined {
			return
		}
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-s.joinPoke:
		case <-timer.C:
		case <-done:
			done = nil
			s.hardStop()
		}
	}
}

// abandonOverdueLocked abandons the runs in flight whose stop bound has
// passed, and returns them and how long until the next bound, or -1 for
// none.
func (s *Supervisor) abandonOverdueLocked() (time.Duration, []AbandonedRun) {
	if s.minStopBy == 0 {
		return -1, nil
	}
	now := s.since()
	if now < s.minStopBy {
		return time.Duration(s.minStopBy - now), nil
	}
	// Jobs still in the work channel have no goroutine (every runner is
	// busy): requeue them, so that each run in flight left is one
	// goroutine, which stuck counts.
	s.drainWorkLocked()
	var (
		next int64
		out  []AbandonedRun
	)
	wallNow := time.Now()
	visit := func(t *task) {
		stopBy := t.c().stopBy
		if t.status != StatusRunning || t.abandoned || stopBy == 0 {
			return
		}
		if stopBy > now {
			if next == 0 || stopBy < next {
				next = stopBy
			}
			return
		}
		t.abandoned = true
		s.stuck++
		s.abandonedTotal++
		cancelled := wallNow.Add(-time.Duration(now - stopBy + int64(s.opts.StopTimeout)))
		out = append(out, AbandonedRun{ID: t.id, Seq: t.runs + 1, Cancelled: cancelled, Abandoned: wallNow})
	}
	for _, t := range s.all {
		s.eachRunLocked(t, visit)
	}
	for _, t := range s.removing {
		s.eachRunLocked(t, visit)
	}
	for _, a := range out {
		if len(s.abandoned) == maxAbandonedListed {
			break
		}
		s.abandoned = append(s.abandoned, a)
	}
	s.minStopBy = next
	if next == 0 {
		return -1, out
	}
	return time.Duration(next - now), out
}

// logAbandoned logs the first ten abandoned runs, then how many more.
func (s *Supervisor) logAbandoned(runs []AbandonedRun) {
	for i, a := range runs {
		if i == 10 {
			s.log.Error("worker: more runs abandoned", "more", len(runs)-i)
			return
		}
		s.log.Error("worker: run abandoned: it did not return within the stop timeout",
			"task", a.ID, "seq", a.Seq, "stop_timeout", s.opts.StopTimeout,
			"cancelled_for", a.Abandoned.Sub(a.Cancelled).Round(time.Millisecond))
	}
}
