// Package state moves the in-memory state of a process to its successor
// across an upgrade, and to a file across a restart.
//
// Components that own state register as a Participant in a Registry. The
// old process freezes them and writes a snapshot: a header naming the
// binary that wrote it, then one section per participant with its own
// schema version, then a trailer (PROTOCOL.md describes every byte). The
// new process declares beforehand which sections and versions it reads
// (Accepts), so that the old one refuses an incompatible successor before
// disturbing anything; it then restores each section, running the
// registered Migrations on older versions. Migrations also go down (from a
// newer schema version to an older one) so that a release can be rolled
// back with its state: the newer binary, the only one that knows both
// formats, runs them when it writes, for the reader's Accepts on an upgrade
// (SendFor), and as alternate sections for any reader in a state file. Send and Receive carry the
// snapshot over the socket the new process inherits, as a sealed memfd on
// Linux up to 256 KiB and streamed on the socket beyond; WriteFile and ReadFile keep it on disk, atomically.
//
// A participant with a PreCopy moves in rounds on an upgrade, so that the
// pause does not grow with its state: SendPreCopy carries a first full copy
// while it runs (ReceivePreCopy restores it), SendPreCopyDelta, still
// running, what changed during the round before, as many times as the
// caller likes, and after Freeze the snapshot of SendFor carries only what
// changed since the last, as deltas that Receive applies on top
// (precopy.go). The rounds are one restore, all or nothing.
//
// Invariant: a participant's Restore only ever sees bytes whose checksum
// has been verified, and ReadSnapshot reports success only if every
// checksum of the snapshot matched and every participant present in it
// restored; otherwise it undoes the restores it made (Participant.Reset),
// so that a process never runs on a mix of restored and initial state. A
// state file from a newer release (ErrUnknownVersion, ErrUnknownSection,
// ErrFormatVersion) is not damage: ReadFile keeps it where it is. Snapshots are encoded and decoded as streams: memory use is
// bounded by the chunk size (1 MiB) for sections at the current version,
// and by Options.MaxSize for a section being migrated; never by a length
// read from the input.
//
// A panic in a participant's Freeze, Thaw, Capture or Restore, or in one of
// its PreCopy callbacks, is recovered
// and returned as a *PanicError (ErrParticipantPanicked) naming the
// participant and the callback, and logged with its stack: a bug in one
// component fails the handoff instead of killing the process holding the
// listeners.
//
// The snapshot holds the state at Capture; what the old process writes
// while it drains afterwards stays there. A Value, whose writes go through
// it, counts such late writes (LateWrites) and logs them, instead of losing
// them without a trace; they still apply in the old process, and are not
// refused, so that no request answered during the drain fails.
package state
