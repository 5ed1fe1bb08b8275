package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batonhq/baton/state"
)

// A Kind is code: what the tasks of that kind do and the schema of their
// state. A binary registers its kinds at start (RegisterKind); its tasks
// are data (Add with a nil Run), created at any time, and each process
// restores every task of a kind it registers from the snapshot, with no
// registration per task.
type Kind struct {
	// Name identifies the kind, in Task.Kind and in the snapshot: 1 to
	// MaxKindLength bytes.
	Name string
	// Version is the schema version of the state this binary's Run
	// writes.
	Version uint32
	// Migrations bring state captured at an older Version to Version on
	// Restore. Nil means none.
	Migrations *state.Migrations
	// Run is the body of the kind's tasks; Run.ID, Run.Args and Run.State
	// tell it which task it runs.
	Run RunFunc
}

// RegisterKind registers a kind, so that Add accepts tasks of it without
// a Run and Restore restores them. Register kinds before Restore; a kind
// registered later adopts the orphans of that kind at once, in which case
// the error, if not nil, names those whose state could not be read (they
// stay orphans, and the kind is registered anyway).
func (s *Supervisor) RegisterKind(k Kind) error {
	switch {
	case k.Name == "" || len(k.Name) > MaxKindLength:
		return fmt.Errorf("%w: kind name %.64q must be 1 to %d bytes", ErrInvalidTask, k.Name, MaxKindLength)
	case k.Run == nil:
		return fmt.Errorf("%w: kind %q has no Run", ErrInvalidTask, k.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase >= phaseStopping {
		return ErrClosed
	}
	if s.kinds[k.Name] != nil {
		return fmt.Errorf("%w: %q", ErrDuplicateKind, k.Name)
	}
	if s.kinds == nil {
		s.kinds = make(map[string]*Kind)
	}
	s.kinds[k.Name] = &k
	var errs []error
	now := s.opts.now()
	for id, rec := range s.orphans {
		if rec.flags&flagData == 0 || rec.kind != k.Name {
			continue
		}
		t, p, err := s.fromRecordLocked(rec, nil)
		if err != nil {
			rec.reason = err.Error()
			errs = append(errs, err)
			continue
		}
		delete(s.orphans, id)
		s.applyLocked(t, p, now)
		s.insertLocked(t)
		s.log.Info("worker: orphaned task adopted by its kind", "task", id, "kind", k.Name, "runs", t.runs)
	}
	return errors.Join(errs...)
}

// fromRecordLocked builds the task of a data record from its spec and
// its registered kind, with its state prepared; c, if not nil, is the
// spec parsed last (taskOfRecordLocked). A nil task with a nil error means
// the kind is not registered.
func (s *Supervisor) fromRecordLocked(rec *record, c *specCache) (*task, prepared, error) {
	t, err := s.taskOfRecordLocked(rec, c)
	if t == nil || err != nil {
		return nil, prepared{}, err
	}
	p, err := prepare(t.spec, rec)
	if err != nil {
		return nil, prepared{}, err
	}
	return t, p, nil
}

// specCache is the last data task spec that taskOfRecordLocked parsed,
// with its kind: the data tasks of a snapshot mostly come in runs that
// differ only by ID, which then share one spec and one copy of its bytes,
// parsed and checked once.
type specCache struct {
	kind  string
	bytes []byte // the spec's bytes, a copy: no task keeps a chunk alive
	spec  *Task
}

// taskOfRecordLocked builds the task of a data record from its spec and
// its registered kind, its state not yet prepared; c, if not nil, is the
// spec parsed last, which it updates. A nil task with a nil error means
// the kind is not registered.
func (s *Supervisor) taskOfRecordLocked(rec *record, c *specCache) (*task, error) {
	k := s.kinds[rec.kind]
	if k == nil {
		return nil, nil
	}
	var shared *Task
	var specBytes []byte
	if c != nil && c.spec != nil && c.kind == rec.kind && bytes.Equal(c.bytes, rec.spec) && utf8.ValidString(rec.id) {
		// The ID is the only field the spec's checks would see anew;
		// the snapshot's reader refused an empty or too long one.
		shared, specBytes = c.spec, c.bytes
	} else {
		// The spec's Args point into its bytes: a copy, so that a task
		// does not keep the snapshot's chunk alive.
		specBytes = bytes.Clone(rec.spec)
		spec, err := decodeSpec(specBytes)
		if err != nil {
			return nil, fmt.Errorf("task %q: %w", rec.id, err)
		}
		spec.ID, spec.Kind = rec.id, rec.kind
		spec.Run, spec.Version, spec.Migrations = k.Run, k.Version, k.Migrations
		if err := spec.validate(); err != nil {
			return nil, err
		}
		spec = spec.withDefaults()
		shared = s.shareSpecLocked(&spec)
		if c != nil {
			*c = specCache{kind: rec.kind, bytes: specBytes, spec: shared}
		}
	}
	t := newTask(rec.id, shared)
	t.data = true
	t.coldLocked().specBytes = specBytes
	return t, nil
}

// An OrphanInfo describes a task in the snapshot that this binary does
// not run: its kind is not registered, or (for a task registered by ID)
// no task claimed its ID. It is kept in the snapshot; see Orphans.
type OrphanInfo struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Runs uint64 `json:"runs"`
	// Data says that the task is data of its kind: it is kept for as
	// long as it takes a binary with the kind to adopt it. A task
	// registered by ID is kept for one generation.
	Data bool `json:"data"`
	// Reason says why it is not run.
	Reason string `json:"reason"`
}

// Orphans returns the tasks of the last Restore that this binary does
// not run, in ID order. A data task is an orphan while its kind is not
// registered: never run, written again by every Capture, adopted by the
// first process that registers its kind. Remove deletes one for good.
func (s *Supervisor) Orphans() []OrphanInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]OrphanInfo, 0, len(s.orphans))
	for _, rec := range s.orphans {
		o := OrphanInfo{ID: rec.id, Kind: rec.kind, Runs: rec.runs, Data: rec.flags&flagData != 0, Reason: rec.reason}
		if o.Reason == "" && o.Data {
			o.Reason = fmt.Sprintf("kind %q is not registered in this binary", rec.kind)
		} else if o.Reason == "" {
			o.Reason = "no task registered with this ID; kept for one generation"
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b OrphanInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// A data task's spec in the snapshot is a sequence of fields, each a tag,
// a length and that many bytes, only for the fields that are not zero:
// integers are varints (times in Unix nanoseconds, durations in
// nanoseconds), strings and Args their bytes. A reader skips the tags it
// does not know, so that a field added by a later release is ignored by
// an earlier one.
const (
	specEvery uint64 = iota + 1
	specCron
	specTimeZone
	specAt
	specJitter
	specPolicy
	specCatchUpLimit
	specCatchUpSpacing
	specOverlap
	specTimeout
	specStart
	specEnd
	specArgs
	specMaxConcurrent
)

// maxSpecField bounds a field on read: Args, and some room.
const maxSpecField = MaxArgsSize + 1024

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// encodeSpec returns t's schedule and options as the snapshot keeps them.
// Paused travels as a record flag: it changes at run time.
func encodeSpec(t *Task) []byte {
	var b []byte
	num := func(tag uint64, v int64) {
		if v != 0 {
			var tmp [binary.MaxVarintLen64]byte
			n := binary.PutVarint(tmp[:], v)
			b = binary.AppendUvarint(binary.AppendUvarint(b, tag), uint64(n))
			b = append(b, tmp[:n]...)
		}
	}
	str := func(tag uint64, v []byte) {
		if len(v) != 0 {
			b = binary.AppendUvarint(binary.AppendUvarint(b, tag), uint64(len(v)))
			b = append(b, v...)
		}
	}
	num(specEvery, int64(t.Every))
	str(specCron, []byte(t.Cron))
	str(specTimeZone, []byte(t.TimeZone))
	num(specAt, unixNano(t.At))
	num(specJitter, int64(t.Jitter))
	num(specPolicy, int64(t.Policy))
	num(specCatchUpLimit, int64(t.CatchUpLimit))
	num(specCatchUpSpacing, int64(t.CatchUpSpacing))
	num(specOverlap, int64(t.Overlap))
	num(specTimeout, int64(t.Timeout))
	num(specStart, unixNano(t.Start))
	num(specEnd, unixNano(t.End))
	str(specArgs, t.Args)
	num(specMaxConcurrent, int64(t.MaxConcurrent))
	if b == nil {
		b = []byte{} // a loop: no field, still a spec
	}
	return b
}

// decodeSpec reads encodeSpec's bytes. Errors wrap ErrCorrupt.
func decodeSpec(b []byte) (Task, error) {
	var t Task
	d := decoder{b: b}
	for len(d.b) > 0 && d.err == nil {
		tag := d.uvarint()
		v := d.bytes(maxSpecField)
		if d.err != nil {
			break
		}
		var n int64
		switch tag {
		case specEvery, specAt, specJitter, specPolicy, specCatchUpLimit, specCatchUpSpacing,
			specOverlap, specTimeout, specStart, specEnd, specMaxConcurrent:
			var k int
			if n, k = binary.Varint(v); k <= 0 || k != len(v) {
				d.err = fmt.Errorf("field %d: bad number", tag)
			}
		}
		switch tag {
		case specEvery:
			t.Every = time.Duration(n)
		case specCron:
			t.Cron = string(v)
		case specTimeZone:
			t.TimeZone = string(v)
		case specAt:
			t.At = fromUnixNano(n)
		case specJitter:
			t.Jitter = time.Duration(n)
		case specPolicy:
			t.Policy = Policy(n)
		case specCatchUpLimit:
			t.CatchUpLimit = int(n)
		case specCatchUpSpacing:
			t.CatchUpSpacing = time.Duration(n)
		case specOverlap:
			t.Overlap = Overlap(n)
		case specTimeout:
			t.Timeout = time.Duration(n)
		case specStart:
			t.Start = fromUnixNano(n)
		case specEnd:
			t.End = fromUnixNano(n)
		case specArgs:
			t.Args = v // points into the chunk, which is never reused
		case specMaxConcurrent:
			t.MaxConcurrent = int(n)
		}
	}
	if d.err != nil {
		return Task{}, fmt.Errorf("%w: task spec: %w", ErrCorrupt, d.err)
	}
	return t, nil
}

// Pause stops scheduling a task: a run in flight finishes, none starts
// until Resume (but for RunNow). The pause travels in the snapshot. Pause,
// Resume and RunNow fail with ErrFrozen while the supervisor is frozen,
// ErrUnknownTask or ErrOrphan for a task it does not run.
// Pausing a paused task does nothing.
func (s *Supervisor) Pause(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.controlledLocked(id)
	if err != nil || t.paused {
		return err
	}
	t.paused = true
	s.markLocked(t)
	if t.status == StatusIdle || t.status == StatusBackoff {
		s.setStatusLocked(t, StatusPaused) // its queue entry is now stale
	}
	return nil
}

// Resume schedules a paused task again. The schedule points that passed
// while it was paused are skipped (counted): it runs next at its first
// point after now. Resuming a task that is not paused does nothing.
func (s *Supervisor) Resume(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.controlledLocked(id)
	if err != nil || !t.paused {
		return err
	}
	t.paused = false
	s.markLocked(t)
	if t.status != StatusPaused {
		if t.c().ov != nil {
			s.requeueRunsLocked(t) // below its bound, it may start another
		}
		return nil // in flight, or a RunNow is queued: it requeues itself
	}
	now := s.mono(s.opts.now())
	if !t.loop() && !t.oneOff() && t.nominal <= now {
		sl := s.skipPast(t, now)
		s.totals.skipped += sl.skipped
		t.nominal = sl.next
		if s.pastEnd(t, t.nominal) {
			s.setStatusLocked(t, StatusDone)
			return nil
		}
		t.jit = jitter(t.spec.Jitter)
		t.due = t.nominal + t.jit
	}
	s.setStatusLocked(t, StatusIdle)
	s.pushLocked(t)
	return nil
}

// skipPast returns the first schedule point of periodic t after now,
// t's nominal point being past and not run: it counts as skipped too.
func (s *Supervisor) skipPast(t *task, now int64) slot {
	spec := *t.spec
	spec.Policy, spec.Overlap = SkipLate, OverlapQueue
	saved := t.spec
	t.spec = &spec
	defer func() { t.spec = saved }()
	sl := s.nextSlotFor(t, now, now)
	sl.skipped++
	return sl
}

// RunNow runs a task as soon as a runner is free, paused or not, without
// moving its schedule: the run gets the next sequence number and the
// next scheduled run stays when it was. If a run is in flight, the extra
// run comes right after it.
func (s *Supervisor) RunNow(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.controlledLocked(id)
	if err != nil {
		return err
	}
	switch t.status {
	case StatusDone:
		return fmt.Errorf("%w: task %q is done: it has no runs left", ErrInvalidTask, id)
	case StatusRunning:
		t.runNow = true
		if t.c().ov != nil {
			s.requeueRunsLocked(t) // below its bound, it starts now
		}
		return nil
	}
	t.runNow = true
	if t.held {
		return nil // queued when the removed instance's run ends
	}
	if t.multi() {
		s.requeueRunsLocked(t) // queued for now, its schedule kept
		return nil
	}
	t.due = s.mono(s.opts.now())
	s.setStatusLocked(t, StatusIdle)
	s.pushLocked(t)
	return nil
}

// controlledLocked returns the registered task id, or why it cannot be
// paused or run.
func (s *Supervisor) controlledLocked(id string) (*task, error) {
	if s.frozen {
		return nil, frozenError("a schedule change")
	}
	t := s.byID.get(s.all, id)
	if t != nil {
		return t, nil
	}
	if rec := s.orphans[id]; rec != nil {
		return nil, fmt.Errorf("%w: %q (kind %q)", ErrOrphan, id, rec.kind)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownTask, id)
}
