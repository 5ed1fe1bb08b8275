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
// halve the depth and share cache lines. An entry names its task by its
// position in Supervisor.all and the number of the push, 16 bytes and no
// pointer for the collector to scan. The price is lazy removal: a
// removed task stays queued until it is popped, and is dropped then. A
// task's due time does not change while it is queued.
//
// Each push takes the next number of last, never 0, which becomes its
// task's qseq; popping the task's entry sets qseq to 0. An entry is live
// while the task at its position has its number: a later push (Pause,
// Resume, RunNow), a pop, a removal or a move of the task in all (see
// dropLocked, which pushes a moved task again) make it stale. compact
// comes at least every 1<<31 pushes, so that no stale entry is left when
// the numbers wrap around to its own.
type taskHeap struct {
	ents []qent
	// last is the number of the last push, since the number of pushes
	// since the last compact.
	last, since uint32
}

type qent struct {
	due int64
	pos uint32 // the task's position in Supervisor.all at the push
	seq uint32 // the push's number
}

// maxSinceCompact is the most pushes between two compacts; see taskHeap.
const maxSinceCompact = 1 << 31

// task returns e's task in all, or nil when e is stale.
func (e qent) task(all []*task) *task {
	if int(e.pos) < len(all) {
		if t := all[e.pos]; t.qseq == e.seq {
			return t
		}
	}
	return nil
}

// len returns the number of entries, stale ones included.
func (h *taskHeap) len() int { return len(h.ents) }

// peek returns the entry with the earliest due time; the heap must not
// be empty.
func (h *taskHeap) peek() qent { return h.ents[0] }

// number gives t the next push number.
func (h *taskHeap) number(t *task) {
	h.last++
	if h.last == 0 {
		h.last = 1
	}
	h.since++
	t.qseq = h.last
}

// needsCompact reports whether the heap should drop its stale entries
// before a push, given how many tasks are registered: it holds many
// (removed, paused, requeued tasks, dropped when popped, which for tasks
// due in an hour is in an hour), or the push numbers are due to wrap.
func (h *taskHeap) needsCompact(tasks int) bool {
	return len(h.ents) >= 2*tasks+1024 || h.since >= maxSinceCompact
}

// push queues t, at its position in all, to be popped at due.
func (h *taskHeap) push(t *task, due int64) {
	h.number(t)
	h.ents = append(h.ents, qent{due: due, pos: t.idx, seq: t.qseq})
	h.up(len(h.ents) - 1)
}

// top returns the task of the entry with the earliest due time, as pop
// would, without removing it.
func (h *taskHeap) top(all []*task) *task {
	t := h.ents[0].task(all)
	if t == nil || t.paused && !t.runNow {
		return nil
	}
	return t
}

// pop removes the entry with the earliest due time and returns its task,
// or nil when the entry is stale or its task is paused.
func (h *taskHeap) pop(all []*task) *task {
	old := h.ents
	n := len(old) - 1
	top, last := old[0], old[n]
	h.ents = old[:n]
	if n > 0 {
		h.down(0, last)
	}
	t := top.task(all)
	if t == nil {
		return nil
	}
	t.qseq = 0 // its entry is gone
	if t.paused && !t.runNow {
		return nil
	}
	return t
}

// compact drops the stale entries and those of paused tasks, and
// restores the heap order.
func (h *taskHeap) compact(all []*task) {
	live := h.ents[:0]
	for _, e := range h.ents {
		t := e.task(all)
		switch {
		case t == nil:
		case t.paused && !t.runNow:
			t.qseq = 0
		default:
			live = append(live, e)
		}
	}
	h.ents = live
	h.since = 0
	h.init()
}

// reset empties the heap, for a rebuild with add and init.
func (h *taskHeap) reset() {
	h.ents = h.ents[:0]
	h.since = 0
}

// add queues t at due without restoring the heap order: init does, once
// every task is added.
func (h *taskHeap) add(t *task, due int64) {
	h.number(t)
	h.ents = append(h.ents, qent{due: due, pos: t.idx, seq: t.qseq})
}

// init restores the heap order after entries were appended in any order.
func (h *taskHeap) init() {
	for i := (len(h.ents) - 2) / 4; i >= 0 && len(h.ents) > 1; i-- {
		h.down(i, h.ents[i])
	}
}

func (h *taskHeap) up(i int) {
	q := h.ents
	e := q[i]
	for i > 0 {
		p := (i - 1) / 4
		if q[p].due <= e.due {
			break
		}
		q[i] = q[p]
		i = p
	}
	q[i] = e
}

// down places e at i or below, moving smaller children up.
func (h *taskHeap) down(i int, e qent) {
	q := h.ents
	n := len(q)
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		for k := c + 1; k < min(c+4, n); k++ {
			if q[k].due < q[m].due {
				m = k
			}
		}
		if e.due <= q[m].due {
			break
		}
		q[i] = q[m]
		i = m
	}
	q[i] = e
}
