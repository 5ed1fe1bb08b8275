// Package worker supervises background tasks whose schedule and state move
// to the next process on an upgrade, so that an upgrade does not show in the
// work they do.
//
// Invariant: each task has at most one run in flight (up to
// Task.MaxConcurrent with OverlapAllow), and a task's runs are numbered
// consecutively across processes (Run.Seq): a run is executed once, in one
// process, unless the freeze bound cut it off, in which case it is
// executed again under the same number after Restore or Thaw (at least once).
//
// # Kinds and tasks as data
//
// A Kind is code: a name, a run function, and the schema of its tasks'
// state (Version, Migrations). The binary registers its kinds at start
// (RegisterKind). A task of a kind is data: ID, kind, schedule, options
// (Args), state and progress. Add one at any time, with no Run; it travels
// whole in the snapshot, so every later process, and with a state file
// every later start, restores it without registering it; Remove deletes
// it for good. A task whose kind the binary does not register is an
// orphan: it stays in the snapshot, is listed by Orphans and the
// orphaned-tasks metric, is never run, and is adopted, state and run count
// included, by the first process that registers its kind. Nothing is
// dropped silently. A Task with a Run is registered by ID, as before: the
// new binary adds it again at start and Restore gives it its progress.
//
// # Schedules
//
// A Task has a stable string ID and one schedule: Every (an interval),
// Cron (an expression with optional seconds, in Task.TimeZone), At (a
// one-off run, removed after it succeeds), or none (a loop). Cron
// expressions are parsed by github.com/robfig/cron/v3. Across a
// daylight-saving change an expression that fires in every hour keeps its
// spacing in elapsed time; one with fixed hours fires once per matching
// wall-clock time, as cron(8) does: a time the change skips runs at the
// change, a time it repeats runs at its first occurrence. Start and End
// bound the schedule, Jitter spreads runs, Timeout bounds each run,
// Overlap says what becomes of points that come due while a run is in
// flight (queued behind it, skipped, or run alongside it, up to a bound),
// Pause and Resume stop and restart
// the schedule, RunNow adds one run without moving it. Next run times are
// data: the snapshot carries them as wall-clock times, and the new
// process runs each task when the old one would have.
//
// # Overlapping runs
//
// With OverlapAllow a periodic task starts the run of each point when it
// comes due, while earlier runs are still in flight, up to
// Task.MaxConcurrent runs at once; at that bound the points wait, as with
// OverlapQueue (its Policy then says whether the late ones run once or each).
// Each run is numbered when it starts, so runs may end out of order: Runs
// counts the finished ones, and the next new number is one more than every
// number given so far. The runs share the task's state: each sees
// (Run.State, the value of Periodic) the state checkpointed when it
// started, and the last Checkpoint wins; a task whose concurrent runs must
// all count keeps its tally elsewhere, or uses OverlapQueue. A failed run
// holds the next start for its backoff. Runs cut off by the freeze bound
// are listed in the snapshot under their numbers and run again first, in
// the next process or after Thaw, marked MaybeDuplicate. Such a snapshot is
// written in format 3, which releases before OverlapAllow refuse with an
// error; any other is format 2, which they read.
//
// A periodic task has a Policy for missed schedule points:
// SkipLate runs once for any number of them, CatchUp runs each of them, up
// to Task.CatchUpLimit, spaced by Task.CatchUpSpacing, never in a burst,
// SkipMissed runs none of those missed while no process ran it. A
// loop is one long call that saves its progress with
// Run.Checkpoint and is restarted from the last checkpoint after a failure,
// a Thaw or a Restore. Each task may own state bytes, at a schema Version of
// its Kind, migrated on Restore by the Kind's state.Migrations. Periodic and
// Loop give the state a Go type.
//
// A run that returns an error or panics is logged with the task ID, counted,
// and retried after a backoff that doubles from Options.InitialBackoff up to
// Options.MaxBackoff; a success resets it. A failing task never holds up the
// others.
//
// # Scale
//
// One scheduler goroutine sleeps on a heap of due times and hands due
// periodic tasks to a bounded pool of runners (Options.Workers); there is
// no goroutine or timer per task. It wakes at the end of an
// Options.Resolution slot (1 ms) for every run due within it, so runs start
// up to that late and never early, and a supervisor of 100k tasks wakes at
// most a thousand times a second. A running loop has a goroutine of its
// own, as it is one long call. Tasks can be added and removed while
// running.
//
// # Upgrades
//
// Participant exposes the supervisor as a snapshot section. In the old
// process Freeze stops dispatching and waits, up to Options.FreezeTimeout,
// for runs in flight; Capture writes every task's progress (wall-clock due
// times, run counts, backoff, last error, state) and the totals of the
// metrics; Thaw resumes as if nothing happened when the upgrade is
// abandoned. In the new process the kinds and the tasks registered by ID
// are registered by the new code (which supplies the run functions), then
// Restore gives them their progress and recreates the data tasks (the
// snapshot supplies where they were), then Run. A task runs
// next when it would have in the old process: runs that came due during the
// handoff run according to their Policy; none runs twice, none is lost. As
// the two processes' wall clocks may disagree, a due time more than one
// interval (for a cron task, than its next point) away is clamped to it.
// A snapshot task registered by ID that the new binary does not register
// is reported and kept for one more generation, so that rolling back does
// not lose it; an orphaned data task is kept for as long as it takes. Handoff
// reports the work pause: from the old process's last finished run to the
// new one's first started run.
//
// # Lifecycle
//
// New, then RegisterKind, Add and Restore, then Run(ctx) which blocks; Shutdown(ctx)
// stops gracefully, ctx cancellation stops hard. Run joins every goroutine
// the supervisor starts, but for runs that ignore their cancellation: a
// stopping supervisor waits Options.StopTimeout from a run's cancellation,
// then abandons it (logged, counted, listed by Abandoned) so that it cannot
// hold the process; its goroutine ends when the run returns. Run contexts
// are cancelled on a hard stop, loops' also on Shutdown, Freeze and Remove,
// each with a cause (ErrShutdown, ErrFrozen, ErrCutOff, ErrRemoved) that
// context.Cause returns. A run cut off after it started runs again under
// the same number, here or in the next process, and knows it may repeat
// work (Run.MaybeDuplicate).
package worker
