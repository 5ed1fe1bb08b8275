// Package worker supervises background tasks whose schedule and state move
// to the next process on an upgrade, so that an upgrade does not show in the
// work they do.
//
// Invariant: each task has at most one run in flight, and a task's runs are
// numbered consecutively across processes (Run.Seq): a run is executed once,
// in one process, unless the freeze bound cut it off, in which case it is
// executed again under the same number after Restore or Thaw (at least once).
//
// # Tasks
//
// A Task has a stable string ID. A periodic task (Every > 0) runs every
// interval, with optional jitter, and a Policy for missed schedule points:
// SkipLate runs once for any number of them, CatchUp runs each of them, up
// to Task.CatchUpLimit, spaced by Task.CatchUpSpacing, never in a burst. A
// loop (Every == 0) is one long call that saves its progress with
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
// abandoned. In the new process the same tasks are registered by the new
// code (which supplies the run functions), then Restore gives them their
// progress (the snapshot supplies where they were), then Run. A task runs
// next when it would have in the old process: runs that came due during the
// handoff run according to their Policy; none runs twice, none is lost. As
// the two processes' wall clocks may disagree, a due time more than one
// interval away is clamped to it. A
// snapshot task that the new binary does not register is reported and kept
// for one more generation, so that rolling back does not lose it. Handoff
// reports the work pause: from the old process's last finished run to the
// new one's first started run.
//
// # Lifecycle
//
// New, then Add and Restore, then Run(ctx) which blocks; Shutdown(ctx)
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
