package worker

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/batonhq/baton/state"
)

// Limits on what a task carries, so that a snapshot stays bounded and a
// damaged one cannot make Restore allocate without bound.
const (
	// MaxIDLength is the longest task ID, in bytes.
	MaxIDLength = 1024
	// MaxKindLength is the longest Kind, in bytes.
	MaxKindLength = 256
	// MaxStateSize is the largest state a task may checkpoint, in bytes.
	MaxStateSize = 16 << 20
	// MaxArgsSize is the largest Task.Args, in bytes.
	MaxArgsSize = 64 << 10
	// maxErrorLength is how much of a run's error message is kept.
	maxErrorLength = 1024
)

// A Policy says what a periodic task does with schedule points it missed
// (the process was frozen, the runners were busy, a run took longer than
// the interval).
type Policy uint8

const (
	// SkipLate runs once for any number of missed points, as soon as it
	// can, then carries on at the next point in the future. It is the
	// zero value.
	SkipLate Policy = iota
	// CatchUp runs once for every missed point, up to the task's
	// CatchUpLimit (older ones are dropped and counted as skipped), each
	// run CatchUpSpacing after the one before, until the task is on
	// schedule again.
	CatchUp
	// SkipMissed runs none of the points missed while no process ran the
	// task (between a snapshot and its restore, or while paused): it runs
	// next at its first point in the future, the missed ones counted as
	// skipped. A run that is only late (the runners were busy) still
	// runs, as with SkipLate.
	SkipMissed
)

// Defaults for a CatchUp task's zero CatchUpLimit and CatchUpSpacing.
const (
	// DefaultCatchUpLimit is how many missed points a CatchUp task runs
	// at most, so that a long downtime, or a wall clock moved forward
	// between processes, does not bring thousands of runs.
	DefaultCatchUpLimit = 10
	// DefaultCatchUpRate is how many times faster than its schedule a
	// CatchUp task runs while it catches up: its runs are Every /
	// DefaultCatchUpRate apart.
	DefaultCatchUpRate = 10
)

// String returns "skip-late", "catch-up" or "skip-missed".
func (p Policy) String() string {
	switch p {
	case SkipLate:
		return "skip-late"
	case CatchUp:
		return "catch-up"
	case SkipMissed:
		return "skip-missed"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// A RunFunc is the body of a task. It gets a context that is cancelled when
// the run must stop (shutdown, freeze bound, removal of a loop) and the
// run's handle. A run that returns an error or panics is retried with
// backoff.
type RunFunc func(ctx context.Context, r *Run) error

// A Task describes one task to Add. The ID is what ties a task in one
// process to the same task in the next one: the new binary registers its
// tasks under the same IDs, and Restore gives them back their progress.
//
// Periodic and Loop build a Task with a typed state; fill in Kind, Version
// and Migrations on the result when the state's schema evolves.
type Task struct {
	// ID names the task, stable across processes: 1 to MaxIDLength bytes.
	ID string

	// Kind names what the task is, and so the schema of its state; it is
	// written in the snapshot and checked on Restore for a task that has
	// state. Tasks of one kind share Version and Migrations. Empty is a
	// valid kind.
	Kind string

	// Version is the schema version of the state this binary's Run writes.
	Version uint32

	// Migrations bring state captured at an older Version to Version on
	// Restore. Nil means none: only Version itself is readable. They run
	// with the supervisor's lock held and must not call the Supervisor.
	Migrations *state.Migrations

	// Every is the interval of a periodic task; the first run is due one
	// interval after Add. Zero makes the task a loop: Run starts at once,
	// is expected to run until its context is cancelled, saving progress
	// with Checkpoint; it is restarted from the last checkpoint after a
	// failure, a Thaw or a Restore, and is done when it returns nil on its
	// own.
	Every time.Duration

	// Jitter adds a random delay in [0, Jitter) to each periodic run, to
	// spread tasks with the same interval. It does not move the nominal
	// schedule. It may not exceed Every. Zero means none.
	Jitter time.Duration

	// Policy says what to do with missed schedule points. Zero is SkipLate.
	Policy Policy

	// CatchUpLimit is, for a CatchUp task, the most missed schedule
	// points it runs late: when more are missed, the oldest are dropped
	// and counted as skipped. Zero means DefaultCatchUpLimit; a negative
	// value means no limit.
	CatchUpLimit int

	// CatchUpSpacing is, for a CatchUp task, the least time from the
	// start of one late run to the start of the next, so that catching up
	// is never a burst. Zero means Every / DefaultCatchUpRate. It may not
	// exceed Every.
	CatchUpSpacing time.Duration

	// Cron, instead of Every, schedules the task by a cron expression:
	// five fields (minute hour day-of-month month day-of-week), six with
	// seconds first, or a descriptor such as @daily, as parsed by
	// github.com/robfig/cron/v3. It is read in TimeZone; see the package
	// doc for daylight-saving changes.
	Cron string

	// TimeZone is the IANA name of the zone Cron is read in, such as
	// Europe/Paris. Empty means UTC.
	TimeZone string

	// At, instead of Every or Cron, makes a one-off task: it runs once at
	// At (at once if At is past) and is removed after its run succeeds; a
	// failed run is retried with backoff.
	At time.Time

	// Overlap says what a periodic task does with schedule points that
	// come due while its run is still in flight. Zero is OverlapQueue.
	Overlap Overlap

	// MaxConcurrent is, for an OverlapAllow task, the most runs it has in
	// flight at once, 2 to MaxConcurrentLimit; zero means
	// DefaultMaxConcurrent. It must be zero for the other policies.
	MaxConcurrent int

	// Timeout bounds each run: its context is cancelled with ErrTimeout
	// that long after it starts, and a run that returns then counts as a
	// failure. Zero means no bound.
	Timeout time.Duration

	// Start and End bound a periodic task's schedule: no schedule point
	// before Start, and none after End, after which the task is done.
	// Zero means no bound.
	Start, End time.Time

	// Paused adds the task paused: it is not run until Resume.
	Paused bool

	// Args are the task's own parameters, for a task of a registered Kind
	// (the customer it works for, say); Run.Args returns them. They travel
	// with the task, at most MaxArgsSize bytes.
	Args []byte

	// Run is the body of the task. Nil makes the task data: its body,
	// Version and Migrations are those of the Kind registered under Kind
	// (RegisterKind), and the task travels whole in the snapshot, so that
	// the next process restores it without registering it again.
	Run RunFunc

	// cron is Cron parsed, set by validate.
	cron *cronSchedule

	// decode turns state bytes at Version into the typed value kept by
	// Periodic and Loop, so that Restore rejects undecodable state.
	decode func([]byte) (any, error)
}

// A Overlap says what a periodic task does with schedule points that come
// due while its run is in flight. Only OverlapAllow lets a task have more
// than one run in flight.
type Overlap uint8

const (
	// OverlapQueue runs the points that came due during a run after it,
	// as its Policy says: once for all of them (SkipLate), or each of them,
	// spaced (CatchUp). It is the zero value.
	OverlapQueue Overlap = iota
	// OverlapSkip drops the points that came due during a run, counted as
	// skipped; the next run is at the first point after the run ended.
	OverlapSkip
	// OverlapAllow starts a point's run when it comes due even while
	// earlier runs are in flight, up to Task.MaxConcurrent of them; at
	// that bound the points wait, as with OverlapQueue, for a run to end.
	// Each run gets its sequence number when it starts, so runs may end
	// out of order; they share the task's state: each sees the state
	// checkpointed when it started, and the last Checkpoint wins. See
	// the package doc.
	OverlapAllow
)

// Bounds of Task.MaxConcurrent.
const (
	// DefaultMaxConcurrent is the bound of an OverlapAllow task whose
	// MaxConcurrent is zero.
	DefaultMaxConcurrent = 4
	// MaxConcurrentLimit is the largest MaxConcurrent.
	MaxConcurrentLimit = 1024
)

// String returns "queue", "skip" or "allow".
func (o Overlap) String() string {
	switch o {
	case OverlapQueue:
		return "queue"
	case OverlapSkip:
		return "skip"
	case OverlapAllow:
		return "allow"
	}
	return fmt.Sprintf("Overlap(%d)", uint8(o))
}

// validate checks t and parses its cron expression.
func (t *Task) validate() error {
	if err := t.validateSchedule(); err != nil {
		return err
	}
	switch {
	case t.ID == "" || len(t.ID) > MaxIDLength || !utf8.ValidString(t.ID):
		return fmt.Errorf("%w: ID %.64q must be 1 to %d bytes of UTF-8", ErrInvalidTask, t.ID, MaxIDLength)
	case len(t.Kind) > MaxKindLength:
		return fmt.Errorf("%w: task %q: Kind longer than %d bytes", ErrInvalidTask, t.ID, MaxKindLength)
	case t.Every < 0 || t.Jitter < 0:
		return fmt.Errorf("%w: task %q: negative Every or Jitter", ErrInvalidTask, t.ID)
	case t.Jitter > t.Every && t.Cron == "":
		return fmt.Errorf("%w: task %q: Jitter %v exceeds Every %v", ErrInvalidTask, t.ID, t.Jitter, t.Every)
	case t.Policy > SkipMissed:
		return fmt.Errorf("%w: task %q: unknown %v", ErrInvalidTask, t.ID, t.Policy)
	case t.CatchUpSpacing < 0 || t.CatchUpSpacing > t.Every && t.Cron == "":
		return fmt.Errorf("%w: task %q: CatchUpSpacing %v is not within [0, Every %v]", ErrInvalidTask, t.ID, t.CatchUpSpacing, t.Every)
	case t.Overlap > OverlapAllow:
		return fmt.Errorf("%w: task %q: unknown %v", ErrInvalidTask, t.ID, t.Overlap)
	case t.Overlap == OverlapAllow && t.Every == 0 && t.Cron == "":
		return fmt.Errorf("%w: task %q: overlap allow needs a periodic schedule (Every or Cron)", ErrInvalidTask, t.ID)
	case t.Overlap != OverlapAllow && t.MaxConcurrent != 0:
		return fmt.Errorf("%w: task %q: MaxConcurrent is for overlap allow", ErrInvalidTask, t.ID)
	case t.MaxConcurrent != 0 && (t.MaxConcurrent < 2 || t.MaxConcurrent > MaxConcurrentLimit):
		return fmt.Errorf("%w: task %q: MaxConcurrent %d is not within [2, %d]", ErrInvalidTask, t.ID, t.MaxConcurrent, MaxConcurrentLimit)
	case t.Timeout < 0:
		return fmt.Errorf("%w: task %q: negative Timeout", ErrInvalidTask, t.ID)
	case len(t.Args) > MaxArgsSize:
		return fmt.Errorf("%w: task %q: Args of %d bytes, limit %d", ErrInvalidTask, t.ID, len(t.Args), MaxArgsSize)
	}
	return nil
}

// validateSchedule checks that at most one of Every, Cron and At is set,
// and parses Cron.
func (t *Task) validateSchedule() error {
	n := 0
	for _, set := range []bool{t.Every != 0, t.Cron != "", !t.At.IsZero()} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: task %q: give one of Every, Cron and At", ErrInvalidTask, t.ID)
	}
	if !t.End.IsZero() && t.End.Before(t.Start) {
		return fmt.Errorf("%w: task %q: End %v is before Start %v", ErrInvalidTask, t.ID, t.End, t.Start)
	}
	if t.Cron == "" {
		if t.TimeZone != "" {
			return fmt.Errorf("%w: task %q: TimeZone without Cron", ErrInvalidTask, t.ID)
		}
		t.cron = nil
		return nil
	}
	c, err := parseCron(t.Cron, t.TimeZone)
	if err != nil {
		return fmt.Errorf("task %q: %w", t.ID, err)
	}
	t.cron = c
	return nil
}

// withDefaults returns t with the zero catch-up fields replaced by their
// defaults, so that the run path need not look them up.
func (t Task) withDefaults() Task {
	if t.CatchUpLimit == 0 {
		t.CatchUpLimit = DefaultCatchUpLimit
	}
	if t.CatchUpSpacing == 0 && t.Cron == "" {
		t.CatchUpSpacing = t.Every / DefaultCatchUpRate
	}
	if t.Overlap == OverlapAllow && t.MaxConcurrent == 0 {
		t.MaxConcurrent = DefaultMaxConcurrent
	}
	return t
}

// A Run is the handle of one run of a task, passed to its RunFunc. It is
// valid only until the RunFunc returns, and only in the run's goroutines.
// (A runner goroutine reuses its handle for its next run.)
type Run struct {
	t *task
	s *Supervisor
}

// ID returns the task's ID.
func (r *Run) ID() string { return r.t.id }

// Args returns the task's Task.Args. The caller must not modify them.
func (r *Run) Args() []byte { return r.t.spec.Args }

// Seq returns the run's sequence number: 1 for a task's first run, one more
// for each run after, across processes. A run cut off by a freeze and run
// again keeps its number. The runs of an OverlapAllow task are numbered
// when they start, and may end out of order.
func (r *Run) Seq() uint64 {
	// runs only changes when a run finishes, and this run has not; a run
	// record of an OverlapAllow task holds its seq - 1 there.
	return r.t.runs + 1
}

// MaybeDuplicate reports whether this run repeats, under the same Seq, a
// run that was cut off (by the freeze bound or a hard stop) after it had
// started, in this process or in the one before: that run may have done
// some or all of its work, and in an old process that abandoned it may
// still be doing it. A run with side effects outside its state can check
// this to make them idempotent.
func (r *Run) MaybeDuplicate() bool { return r.t.rerun }

// State returns the task's last checkpointed state, at the task's Version,
// or nil when there is none; for a run of an OverlapAllow task, the state
// when the run started. The caller must not modify it.
func (r *Run) State() []byte { return r.t.state() }

// Checkpoint makes b the task's state, at the task's Version: what Capture
// writes, what a restarted loop resumes from. It keeps b, which the caller
// must not modify afterwards. It returns ErrCutOff once the run was cut off
// by a freeze, and ErrRemoved once the task was removed; the state is not
// changed then, and the run should return.
func (r *Run) Checkpoint(b []byte) error {
	if len(b) > MaxStateSize {
		return fmt.Errorf("%w: task %q: %d bytes, limit %d", ErrStateTooLarge, r.t.id, len(b), MaxStateSize)
	}
	s, t := r.s, r.t
	s.mu.Lock()
	defer s.mu.Unlock()
	owner := t.owner()
	switch {
	case owner.removed:
		return ErrRemoved
	case t.cutOff:
		return ErrCutOff
	}
	owner.setState(b)
	owner.stateGen++
	s.markLocked(owner)
	return nil
}

// A Status is where a task is in its cycle.
type Status uint8

// Statuses, as reported by TaskInfo, Stats and the tasks metric.
const (
	// StatusIdle: waiting for its next due time.
	StatusIdle Status = iota
	// StatusRunning: a run is in flight.
	StatusRunning
	// StatusBackoff: the last run failed; waiting to retry.
	StatusBackoff
	// StatusFrozen: idle or in backoff while the supervisor is frozen.
	StatusFrozen
	// StatusDone: a loop that returned nil on its own, or a periodic task
	// past its End. It is not run again.
	StatusDone
	// StatusPaused: paused (Pause), not run until Resume.
	StatusPaused
	numStatus
)

var statusNames = [numStatus]string{"idle", "running", "backoff", "frozen", "done", "paused"}

// String returns the status's name as used in metrics labels.
func (s Status) String() string {
	if s < numStatus {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler, for JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// TaskInfo describes one task, for introspection.
type TaskInfo struct {
	ID     string `json:"id"`
	Kind   string `json:"kind,omitempty"`
	Loop   bool   `json:"loop,omitempty"`
	Status Status `json:"status"`
	// Runs counts the task's finished runs, across processes; it is also
	// the sequence number of the last finished run.
	Runs uint64 `json:"runs"`
	// Failures counts the runs that failed or panicked.
	Failures uint64 `json:"failures"`
	// ConsecutiveFailures counts the failures since the last success; it
	// sets the backoff.
	ConsecutiveFailures uint64 `json:"consecutive_failures"`
	// LastError is the message of the last failure, kept after a success.
	LastError string `json:"last_error,omitempty"`
	// Next is when the next run is due; zero while running or done.
	Next time.Time `json:"next"`
	// StateVersion and StateBytes describe the checkpointed state.
	StateVersion uint32 `json:"state_version"`
	StateBytes   int    `json:"state_bytes"`
	// MaybeDuplicate says that the next (or current) run repeats a run
	// that was cut off after it started; see Run.MaybeDuplicate.
	MaybeDuplicate bool `json:"maybe_duplicate,omitempty"`
	// Schedule describes the schedule: "every 1s", "cron */5 * * * * *
	// Europe/Paris", "at 2026-12-03T08:00:00Z" or "loop".
	Schedule string `json:"schedule"`
	// Paused says that the task is paused; Status is paused unless its
	// run is in flight.
	Paused bool `json:"paused,omitempty"`
	// Data says that the task is data of a registered Kind, restored by
	// the next process without registration.
	Data bool `json:"data,omitempty"`
	// LastRun is when the last counted run finished; zero if none in
	// this process or the snapshot's.
	LastRun time.Time `json:"last_run,omitzero"`
	// InFlight counts the runs in flight of an OverlapAllow task, and
	// Pending those cut off by a freeze that will run again (keeping
	// their numbers).
	InFlight int `json:"in_flight,omitempty"`
	Pending  int `json:"pending,omitempty"`
}

// task is the supervisor's record of a registered task. Fields are guarded
// by Supervisor.mu, except that while a run is in flight its goroutine reads
// runs, state, stateGen and cold.local without the lock: nothing else writes
// them then (Checkpoint writes state under the lock from the run itself).
//
// A million periodic tasks are a million of these, so the record holds
// what every task uses (112 bytes, a size class of the allocator; see
// TestTaskRecordSize) and the rest is in cold, allocated for the few
// tasks that need it: failing, loops, data, typed, OverlapAllow, cut off
// or stopping.
type task struct {
	id string
	// spec is the task as added, with its defaults; tasks that differ
	// only by ID share one (see internLocked), whose ID is empty: the
	// task's ID is id. It never changes once the task is inserted.
	spec *Task

	// nominal is the schedule point the next (or current) periodic run
	// serves, due is when it may start: nominal plus jitter, or a retry.
	// Both are nanoseconds on the supervisor's monotonic clock.
	nominal, due int64
	// jit is the jitter in due (due - nominal) when due comes from the
	// schedule, 0 when it is a retry or a restart.
	jit int64

	runs uint64

	// stateP and stateLen are the checkpointed state (see state): a
	// []byte without its capacity, 12 bytes instead of 24. A state is
	// at most MaxStateSize bytes.
	stateP   *byte
	stateLen uint32
	stateGen uint32 // bumped whenever state changes; compared for equality only

	// lastRun is when the last counted run finished (wall ns), 0 if none.
	lastRun int64

	// cold holds the fields most tasks never use; nil until one is set
	// (see coldLocked). A typed task (Task.decode) has it from the start,
	// since its run reads cold.local without the lock.
	cold *coldTask

	idx uint32 // position in Supervisor.all
	// qseq is the number of t's live queue entry, 0 if none (see
	// taskHeap): an entry of an earlier push is stale (Pause, Resume and
	// RunNow requeue a queued task).
	qseq uint32

	status      Status // never StatusFrozen: that is a view of idle/backoff
	interrupted bool   // loop asked to stop by freeze or shutdown: restart, do not count
	cutOff      bool   // run abandoned by the freeze bound: discard its result, run again
	removed     bool   // no longer registered; a run in flight is discarded
	held        bool   // re-added while the removed instance still runs: queue when it ends
	abandoned   bool   // the run in flight was abandoned; Supervisor.stuck counts it
	// data: a task of a registered Kind, written whole in the snapshot.
	data bool
	// paused: not queued again until Resume. runNow: RunNow asked for a
	// run now; extra: the run in flight is that run, which does not
	// advance the schedule.
	paused, runNow, extra, retryExtra bool
	// maybeDup says that the next run repeats a run, under the same
	// sequence number, that was cut off after it started, here or in an
	// earlier process; rerun is its value when the run in flight was
	// dispatched, which Run.MaybeDuplicate reports.
	maybeDup, rerun bool
	// progress: a Restore or an adoption gave the task progress; see
	// fresh.
	progress bool
	// pc holds the pre-copy bits (pcDirty, ...; see precopy.go), in the
	// record's spare bytes.
	pc uint8
}

// coldTask is the part of a task that most periodic tasks never use.
type coldTask struct {
	failures, consecutive uint64
	lastErr               string

	local    any    // typed value kept by Periodic and Loop
	localGen uint32 // stateGen that local matches

	cancel context.CancelCauseFunc // a running loop's context

	// stopBy is when the run in flight, whose context was cancelled, must
	// have returned (Supervisor.since), 0 if not cancelled; a stopping
	// supervisor abandons it then.
	stopBy int64

	// specBytes is a data task's spec as the snapshot writes it.
	specBytes []byte
	// ov holds the runs of a task that may have several: an OverlapAllow
	// task, or one restored with cut-off runs of one; nil for the others.
	// A run record (ov.parent != t) is a task of its own for one run.
	ov *overlapRuns
}

// state returns t's checkpointed state, nil if none. Its capacity is its
// length, so an append to it copies.
func (t *task) state() []byte {
	if t.stateP == nil {
		return nil
	}
	return unsafe.Slice(t.stateP, t.stateLen)
}

// setState makes b t's state, as state returns it; b is at most
// MaxStateSize bytes. It does not bump stateGen.
func (t *task) setState(b []byte) {
	t.stateP, t.stateLen = unsafe.SliceData(b), uint32(len(b))
}

// noCold is what the cold fields read as for a task without them.
var noCold coldTask

// coldLocked returns t's cold part, made on first use. A task's run
// reads t.cold without the lock only when it was made with t (typed
// tasks, run records), so making it here does not race.
func (t *task) coldLocked() *coldTask {
	if t.cold == nil {
		t.cold = new(coldTask)
	}
	return t.cold
}

// c returns t's cold part for reading: its zero value when t has none.
// It must not be written through.
func (t *task) c() *coldTask {
	if t.cold != nil {
		return t.cold
	}
	return &noCold
}

// setLocal makes v the typed value in step with t's state, for Restore.
func (t *task) setLocal(v any) {
	if v == nil && t.cold == nil {
		return
	}
	c := t.coldLocked()
	c.local, c.localGen = v, t.stateGen
}

// newTask returns the record of a task with ID id and spec spec, not yet
// inserted; a typed task gets its cold part now (see task.cold).
func newTask(id string, spec *Task) *task {
	t := &task{id: id, spec: spec}
	if spec.decode != nil {
		t.cold = new(coldTask)
	}
	return t
}

// loop reports whether t is a loop: no Every, Cron or At.
func (t *task) loop() bool { return t.spec.Every == 0 && t.spec.cron == nil && t.spec.At.IsZero() }

// oneOff reports whether t is a one-off task (Task.At).
func (t *task) oneOff() bool { return !t.spec.At.IsZero() }

func truncateError(msg string) string {
	if len(msg) <= maxErrorLength {
		return msg
	}
	// Cutting may split a rune; drop the pieces rather than store bad UTF-8.
	return strings.ToValidUTF8(msg[:maxErrorLength], "")
}
