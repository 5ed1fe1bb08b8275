package state

import (
	"context"
	"io"
	"log/slog"
	"runtime/debug"
)

// A Participant is one named section of a snapshot: a component whose state
// moves to the new process on an upgrade (the worker supervisor, a cache,
// counters, the application's own state).
//
// In the old process the handoff calls Freeze, then Capture, then either
// nothing more (the new process took over) or Thaw (it did not: carry on as
// if nothing happened). In the new process, or on a cold start from a state
// file, Restore is called before the process reports ready.
//
// The Registry recovers a panic in any of these functions (called on the
// Registry's goroutine; it cannot recover one in a goroutine they start)
// and returns it as a *PanicError wrapping ErrParticipantPanicked: a
// Freeze that panics fails the Freeze, and the participants frozen before
// it are thawed; its own Thaw is not called, since it may undo what its
// Freeze never did.
type Participant struct {
	// Name identifies the section. It must be 1 to 64 bytes of [a-z0-9._-]
	// and unique within a Registry.
	Name string

	// Version is the schema version that Capture writes and Restore reads.
	// Older versions reach Restore through the registered migrations.
	Version uint32

	// Freeze stops the component from changing its state, within ctx. It is
	// called in the old process before Capture. Nil means there is nothing
	// to stop.
	Freeze func(ctx context.Context) error

	// Thaw undoes Freeze when the handoff is aborted: the new process died,
	// hung, or rejected the snapshot. Nil means there is nothing to resume.
	Thaw func()

	// Capture writes the frozen state to w. w is valid only until
	// Capture returns.
	Capture func(w io.Writer) error

	// Restore reads state written by Capture at Version from r. r is
	// valid only until Restore returns. Its Read returns io.EOF only at
	// the verified end of the section; any other error, damage
	// included, means the state is not to be trusted.
	Restore func(r io.Reader) error

	// Reset puts the component back in the state it had before Restore.
	// A restore is all or nothing: when a snapshot fails to restore (a
	// later section is damaged, cannot be migrated, or its Restore fails
	// or panics), the registry undoes every Restore it called, the failing
	// one included, last first, so that the process never runs on a mix
	// of restored and initial state. Reset must therefore work after a
	// Restore that failed half-way, too.
	//
	// Nil means the registry undoes the Restore itself: just before
	// calling Restore it captures the participant's current state (its
	// initial state, normally small) into memory, and restores that copy
	// to undo. That is right for a Restore that replaces the state, as
	// Restore is meant to; a Restore that adds to what is there (a
	// counter that counted before Restore) must set Reset instead, or it
	// would be counted twice.
	Reset func()

	// PreCopy, if set, lets an upgrade move the state in rounds, as live
	// migration of a virtual machine does, so that the pause does not
	// grow with the size of the state: a first full copy is taken and
	// restored while the component keeps running, then, still running,
	// what changed during the round before, as long as that shrinks, and
	// after Freeze only what changed since the last of those goes over.
	// Nil means one round: Freeze, Capture, Restore.
	PreCopy *PreCopy
}

// PreCopy is a participant's handoff in rounds (Participant.PreCopy). In
// the old process: Want, then Capture while the component runs, then Delta
// any number of times while it still runs (the middle rounds), then either
// Freeze and Delta (the last round), or Stop (the upgrade ended before the
// last round). In the new process: Restore reads what Capture wrote and
// RestoreDelta, once per later round, what each Delta wrote, on top of
// what came before; the participant's Reset undoes them all. All six are
// required. The registry's side is in precopy.go (Registry.PreCopySections,
// SendPreCopy, SendPreCopyDelta, ReceivePreCopy), the bytes in
// PROTOCOL.md.
type PreCopy struct {
	// Want reports whether a first round is worth its round trip now: a
	// participant with little state says no, and is captured whole after
	// Freeze, as without PreCopy.
	Want func() bool

	// Capture writes a full copy of the state while the component runs
	// (it is not frozen), and starts keeping track of what changes from
	// then on. The copy need not be consistent as a whole: whatever
	// changes after Capture starts is written again by Delta.
	Capture func(w io.Writer) error

	// Delta writes what changed since Capture or the previous Delta
	// started. While the component runs (a middle round) it starts the
	// tracking over: what changes from then on goes in the next Delta,
	// what changes while it writes included; if it fails, only Stop
	// follows. After Freeze (the last round) it ends the tracking,
	// whatever it returns.
	Delta func(w io.Writer) error

	// Stop ends the tracking that Capture started, when the upgrade ends
	// before the last Delta (Registry.StopPreCopy), after middle rounds
	// or not. It is called after a Capture or a middle Delta that failed,
	// too.
	Stop func()

	// Restore reads what Capture wrote, in the new process. The state it
	// restores is complete only once RestoreDelta has run for the last
	// round.
	Restore func(r io.Reader) error

	// RestoreDelta reads what one Delta wrote and applies it on top of
	// what Restore and the RestoreDeltas before read: once per middle
	// round, and once for the last.
	RestoreDelta func(r io.Reader) error
}

// call runs one callback of participant name and turns a panic into a
// *PanicError, logged with its stack on log.
func call(log *slog.Logger, name, callback string, fn func() error) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		pe := &PanicError{Participant: name, Callback: callback, Value: v, Stack: debug.Stack()}
		log.Error("state: participant panicked; recovered",
			"participant", name, "callback", callback, "panic", v, "stack", string(pe.Stack))
		err = pe
	}()
	return fn()
}
