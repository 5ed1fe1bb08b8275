package worker

import (
	"time"
	"unsafe"

	"github.com/batonhq/baton/state"
)

// shareSpecLocked returns the spec a new task keeps: the last new
// task's when the two differ only by ID, else a copy of spec with its ID
// cleared (so that no code reads a task's ID from a shared spec; the
// task's is task.id). It does not keep spec. A service's tasks are
// mostly many of one shape (a task per customer, of one kind, on one
// schedule) added one after the other: they share one spec, which at a
// million tasks saves a quarter of a gigabyte, and the garbage
// collector's scanning of it. Comparing with the last one only costs
// nothing to tasks that share nothing (typed tasks, whose decoders are
// closures of their own).
func (s *Supervisor) shareSpecLocked(spec *Task) *Task {
	key := keyOf(spec)
	if s.lastSpec != nil && key == s.lastKey {
		return s.lastSpec
	}
	c := new(Task)
	*c = *spec
	c.ID = ""
	s.lastSpec, s.lastKey = c, key
	return c
}

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
