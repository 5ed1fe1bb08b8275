package worker

import (
	"math"
	"math/rand/v2"
	"time"
)

// This file holds the pure schedule arithmetic and the timer heap. Times are
// int64 nanoseconds on the supervisor's monotonic clock.

// slot is the schedule point a periodic task serves next.
type slot struct {
	// next is the schedule point; notBefore is the earliest the run for
	// it may start, later than next while a CatchUp task catches up.
	next, notBefore int64
	// skipped counts the points the policy dropped.
	skipped uint64
}

// nextSlot returns the schedule point that follows nominal for task spec
// (with its defaults applied), after a run that started at start. With
// SkipLate the run served every point up to its start (a late run stands
// for all the points it was late for): the next is the first point after
// start, and the ones it jumped are counted as skipped. With CatchUp it is
// the next point, which runs CatchUpSpacing after start if it is already
// past, so overdue points run one after the other, spaced; of more than
// CatchUpLimit overdue points the oldest are skipped.
func nextSlot(nominal, start int64, spec *Task) slot {
	every := int64(spec.Every)
	next := nominal + every
	if next > start {
		return slot{next: next, notBefore: next}
	}
	k := (start-next)/every + 1 // points due by start, next included
	if spec.Policy != CatchUp {
		next += k * every
		return slot{next: next, notBefore: next, skipped: uint64(k)}
	}
	sl := slot{next: next, notBefore: next}
	if spec.CatchUpSpacing > 0 {
		// Zero spacing (an interval under DefaultCatchUpRate ns) runs
		// the overdue points at once, in the order of their points.
		sl.notBefore = start + int64(spec.CatchUpSpacing)
	}
	if limit := int64(spec.CatchUpLimit); limit > 0 && k > limit {
		sl.next += (k - limit) * every
		sl.skipped = uint64(k - limit)
	}
	return sl
}

// never is the schedule point of a task that has none left.
const never = math.MaxInt64

// maxScan bounds how many missed cron points one schedule computation
// walks; past it the schedule jumps to the first point after now.
const maxScan = 10000

// wallOf returns the wall-clock time of mono on the supervisor's clock.
func (s *Supervisor) wallOf(mono int64) time.Time { return s.base.Add(time.Duration(mono)) }

// cronAfter returns t's first cron point after p, or never.
func (s *Supervisor) cronAfter(t *task, p int64) int64 {
	w := t.spec.cron.next(s.wallOf(p))
	if w.IsZero() {
		return never
	}
	return s.mono(w)
}

// nextSlotFor returns the schedule point that follows t's nominal one
// after a run that started at start (jitter taken off) and ended at end,
// as nextSlot says, for an interval or a cron task, with t's Overlap
// policy applied.
func (s *Supervisor) nextSlotFor(t *task, start, end int64) slot {
	var sl slot
	if t.spec.cron == nil {
		sl = nextSlot(t.nominal, start, t.spec)
	} else {
		sl = s.nextCronSlot(t, start)
	}
	if t.spec.Overlap == OverlapSkip && sl.next <= end {
		// Points that came due while the run was in flight are dropped.
		next, k := sl.next, uint64(0)
		if t.spec.cron == nil {
			every := int64(t.spec.Every)
			k = uint64((end-next)/every + 1)
			next += int64(k) * every
		} else {
			for next <= end && k < maxScan {
				next = s.cronAfter(t, next)
				k++
			}
			if next <= end {
				next = s.cronAfter(t, end)
			}
		}
		sl = slot{next: next, notBefore: next, skipped: sl.skipped + k}
	}
	return sl
}

// nextCronSlot is nextSlot for a cron task: points are the expression's,
// found one by one (at most maxScan of them).
func (s *Supervisor) nextCronSlot(t *task, start int64) slot {
	next := s.cronAfter(t, t.nominal)
	if next > start {
		return slot{next: next, notBefore: next}
	}
	k, p := uint64(0), next // points due by start, next included
	for p <= start && k < maxScan {
		p = s.cronAfter(t, p)
		k++
	}
	if t.spec.Policy != CatchUp || p <= start {
		// A late run stands for all the points it was late for; past
		// maxScan points, catching up is not an option either.
		if p <= start {
			p = s.cronAfter(t, start)
		}
		return slot{next: p, notBefore: p, skipped: k}
	}
	sl := slot{next: next, notBefore: next}
	if limit := uint64(t.spec.CatchUpLimit); t.spec.CatchUpLimit > 0 && k > limit {
		for range k - limit {
			sl.next = s.cronAfter(t, sl.next)
		}
		sl.skipped = k - limit
	}
	spacing := int64(t.spec.CatchUpSpacing)
	if spacing == 0 {
		if after := s.cronAfter(t, sl.next); after != never {
			spacing = (after - sl.next) / DefaultCatchUpRate
		}
	}
	sl.notBefore = start + spacing
	return sl
}

// backoff returns the delay before retrying after n consecutive failures:
// initial, doubled for each failure after the first, capped at max.
func backoff(n uint64, initial, max time.Duration) time.Duration {
	if n == 0 {
		return 0
	}
	d := initial
	for i := uint64(1); i < n; i++ {
		if d >= max/2 {
			return max
		}
		d *= 2
	}
	return min(d, max)
}

// wakeAt returns the end of the resolution slot that holds due: the
// scheduler sleeps until then and dispatches every run due by then in one
// go, so that runs are never early and at most res late.
func wakeAt(due, res int64) int64 {
	if r := due % res; r != 0 {
		if r < 0 {
			r += res
		}
		return due - r + res
	}
	return due
}

// jitter returns a random delay in [0, j).
func jitter(j time.Duration) int64 {
	if j <= 0 {
		return 0
	}
	return rand.Int64N(int64(j))
}

// taskHeap is a 4-ary min-heap of queued tasks by due time. Each entry
// carries a copy of its task's due time and tasks do not know their
// position, so sifting touches only the heap's own contiguous memory: at
// 100k tasks the scheduler's cost is cache misses, and a binary heap with
// an index kept in each task took one per swap. Four children per node
// halve the depth and share cache lines. The price is lazy removal: a
// removed task stays queued until it is popped, and is dropped then. A
// task's due time does not change while it is queued.
type taskHeap []qent

type qent struct {
	due int64
	t   *task
	seq uint32 // t.qseq at the push; another value marks a stale entry
}

// push queues t to be popped at due.
func (h *taskHeap) push(t *task, due int64) {
	t.qseq++
	*h = append(*h, qent{due: due, t: t, seq: t.qseq})
	h.up(len(*h) - 1)
}

// pop removes the entry with the earliest due time and returns its task,
// or nil when the entry is stale: the task was queued again since (Pause,
// Resume, RunNow) or is paused. A removed task is returned: the caller
// drops it.
func (h *taskHeap) pop() *task {
	old := *h
	n := len(old) - 1
	top, last := old[0], old[n]
	old[n] = qent{} // let a removed task be collected
	*h = old[:n]
	if n > 0 {
		h.down(0, last)
	}
	if t := top.t; top.seq != t.qseq || t.paused && !t.runNow {
		return nil
	}
	return top.t
}

// compact drops the stale entries and restores the heap order.
func (h *taskHeap) compact() {
	live := (*h)[:0]
	for _, e := range *h {
		if t := e.t; e.seq == t.qseq && !t.removed && !(t.paused && !t.runNow) {
			live = append(live, e)
		}
	}
	clear((*h)[len(live):]) // let the dropped tasks be collected
	*h = live
	h.init()
}

// init restores the heap order after entries were appended in any order.
func (h taskHeap) init() {
	for i := (len(h) - 2) / 4; i >= 0 && len(h) > 1; i-- {
		h.down(i, h[i])
	}
}

func (h taskHeap) up(i int) {
	e := h[i]
	for i > 0 {
		p := (i - 1) / 4
		if h[p].due <= e.due {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = e
}

// down places e at i or below, moving smaller children up.
func (h taskHeap) down(i int, e qent) {
	n := len(h)
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		for k := c + 1; k < min(c+4, n); k++ {
			if h[k].due < h[m].due {
				m = k
			}
		}
		if e.due <= h[m].due {
			break
		}
		h[i] = h[m]
		i = m
	}
	h[i] = e
}
