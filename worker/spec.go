package worker

import (
	"time"
	"unsafe"

	"github.com/batonhq/baton/state"
)

// shareSpecLocked returns the spec a new task keeps: that of one of the
// last few new tasks of distinct shapes (recentSpecs) when the two differ
// only by ID, else a copy of spec with its ID cleared (so that no code
// reads a task's ID from a shared spec; the task's is task.id). It does
// not keep spec. A service's tasks are mostly many of a few shapes (a
// task per customer, of one kind, on one or a few schedules) added one
// after the other or interleaved: they share a spec per shape, which at a
// million tasks saves a quarter of a gigabyte, and the garbage
// collector's scanning of it. Comparing with a few only costs little to
// tasks that share nothing (typed tasks, whose decoders are closures of
// their own; one-off tasks at distinct times).
func (s *Supervisor) shareSpecLocked(spec *Task) *Task {
	key := keyOf(spec)
	r := &s.recentSpecs
	for i := range r {
		if r[i].spec != nil && r[i].key == key {
			if i > 0 {
				// Most recent first: a run of one shape compares once.
				e := r[i]
				copy(r[1:i+1], r[:i])
				r[0] = e
			}
			return r[0].spec
		}
	}
	c := new(Task)
	*c = *spec
	c.ID = ""
	copy(r[1:], r[:len(r)-1])
	r[0] = recentSpec{key: key, spec: c}
	return c
}

// recentSpec is a spec that shareSpecLocked may give again, and its key.
type recentSpec struct {
	key  specKey
	spec *Task
}

// numRecentSpecs is how many distinct shapes shareSpecLocked compares a
// new task with.
const numRecentSpecs = 4

// specKey is every field of a Task but the ID, in comparable form: the
// functions by their closure (two tasks share a spec only if they run the
// very same func value), Args as a string. TestSpecKeyCoversTask checks
// that it follows Task.
type specKey struct {
	Kind                    string
	Version                 uint32
	Migrations              *state.Migrations
	Every, Jitter           time.Duration
	Policy                  Policy
	CatchUpLimit            int
	CatchUpSpacing, Timeout time.Duration
	Cron, TimeZone          string
	At, Start, End          time.Time
	Overlap                 Overlap
	MaxConcurrent           int
	Paused                  bool
	Args                    string
	Run, decode             unsafe.Pointer
	cron                    *cronSchedule
}

func keyOf(t *Task) specKey {
	return specKey{Kind: t.Kind, Version: t.Version, Migrations: t.Migrations, Every: t.Every, Jitter: t.Jitter,
		Policy: t.Policy, CatchUpLimit: t.CatchUpLimit, CatchUpSpacing: t.CatchUpSpacing, Timeout: t.Timeout,
		Cron: t.Cron, TimeZone: t.TimeZone, At: t.At, Start: t.Start, End: t.End, Overlap: t.Overlap,
		MaxConcurrent: t.MaxConcurrent, Paused: t.Paused, Args: string(t.Args), Run: funcPointer(t.Run), decode: funcPointer(t.decode), cron: t.cron}
}

// funcPointer returns the closure a func value points to: equal for
// copies of one func value, different for two closures even of the same
// code, since they may hold different variables.
func funcPointer[F any](f F) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&f))
}
