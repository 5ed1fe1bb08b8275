package worker

import (
	"errors"
	"fmt"
)

// Errors returned by this package. Callers test for them with errors.Is; the
// returned errors wrap them with the task ID and the values involved.
var (
	// ErrInvalidOptions means a field of Options is out of range.
	ErrInvalidOptions = errors.New("worker: invalid options")
	// ErrInvalidTask means a Task given to Add is not usable as it is.
	ErrInvalidTask = errors.New("worker: invalid task")
	// ErrDuplicateTask means a task with the same ID is already registered.
	ErrDuplicateTask = errors.New("worker: duplicate task id")
	// ErrUnknownTask means no task with that ID is registered.
	ErrUnknownTask = errors.New("worker: no such task")
	// ErrUnknownKind means a task without Run names a Kind that is not
	// registered (RegisterKind).
	ErrUnknownKind = errors.New("worker: unknown task kind")
	// ErrDuplicateKind means a Kind with the same name is already
	// registered.
	ErrDuplicateKind = errors.New("worker: duplicate task kind")
	// ErrOrphan means the task is in the snapshot but its kind is not
	// registered in this binary: it is kept and listed (Orphans), never
	// run, until a binary that registers its kind adopts it.
	ErrOrphan = errors.New("worker: task is an orphan: its kind is not registered")
	// ErrRunning means the call needs a supervisor whose Run has not been
	// called yet: Run was called twice, or Restore came after Run.
	ErrRunning = errors.New("worker: supervisor is already running")
	// ErrClosed means the supervisor was shut down; it cannot be reused.
	ErrClosed = errors.New("worker: supervisor is shut down")

	// ErrFrozen is the cancellation cause of a loop's context when the
	// supervisor freezes for an upgrade. The loop should checkpoint and
	// return; it is restarted from that checkpoint after Thaw or Restore.
	ErrFrozen = errors.New("worker: supervisor frozen for an upgrade")
	// ErrCutOff is the cancellation cause of a run that did not finish
	// within the freeze bound, and what Checkpoint returns from then on: the
	// run is abandoned and runs again after Thaw or Restore.
	ErrCutOff = errors.New("worker: run cut off by the freeze bound")
	// ErrShutdown is the cancellation cause of run contexts when the
	// supervisor stops.
	ErrShutdown = errors.New("worker: supervisor shutting down")
	// ErrRemoved is the cancellation cause of a loop's context, and what
	// Checkpoint returns, once its task was removed.
	ErrRemoved = errors.New("worker: task removed")
	// ErrTimeout is the cancellation cause of a run that outlived its
	// Task.Timeout.
	ErrTimeout = errors.New("worker: run timed out")
	// ErrStateTooLarge means a checkpoint exceeds MaxStateSize.
	ErrStateTooLarge = errors.New("worker: task state too large")

	// ErrCorrupt means snapshot bytes are truncated, damaged or not a
	// worker snapshot at all.
	ErrCorrupt = errors.New("worker: corrupt snapshot")
	// ErrStateVersion means a task's state in the snapshot is at a schema
	// version this binary cannot read. The error also wraps
	// state.ErrUnknownVersion. Register a migration on the task's
	// Migrations, or roll back to a binary that reads that version.
	ErrStateVersion = errors.New("worker: task state version cannot be read")
	// ErrKindChanged means a task ID in the snapshot, with state, is
	// registered with a different Kind in this binary, so its state would
	// be misread. Give the new task a new ID, or keep the old Kind.
	ErrKindChanged = errors.New("worker: task kind changed")
	// ErrBadState means a task's state bytes could not be decoded into its
	// typed value (Periodic, Loop).
	ErrBadState = errors.New("worker: task state cannot be decoded")
	// ErrNoPreCopy means a step of the pre-copy handoff came without the
	// step before it: Delta without the first round's Capture (or after
	// Stop, or with the supervisor not frozen), RestoreDelta without the
	// pre-copy Restore. Delta also fails with it when the tracking of the
	// first round broke (a Restore replaced the tasks meanwhile).
	ErrNoPreCopy = errors.New("worker: no pre-copy round in progress")
	// ErrPreCopyIncomplete means the supervisor restored a pre-copy base
	// and awaits its delta: Run, Capture and Restore fail with it until
	// RestoreDelta or Reset.
	ErrPreCopyIncomplete = errors.New("worker: pre-copy restore awaits its delta")
)

// errGoexit is recorded as the failure of a run that called runtime.Goexit
// (t.FailNow in a test, for one), which no recover can stop.
var errGoexit = errors.New("worker: run called runtime.Goexit")

// A PanicError is the failure recorded for a run that panicked.
type PanicError struct {
	// Value is what the run passed to panic.
	Value any
	// Stack is the run's goroutine stack at the panic.
	Stack []byte
}

// Error implements error.
func (e *PanicError) Error() string { return fmt.Sprintf("worker: run panicked: %v", e.Value) }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
