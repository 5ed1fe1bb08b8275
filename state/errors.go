package state

import (
	"errors"
	"fmt"
)

// Errors returned by this package. Callers test for them with errors.Is;
// the returned errors wrap them with the section, versions, offsets or
// paths involved.
var (
	// ErrUnknownVersion means a section's schema version cannot be brought
	// to the version this binary reads.
	ErrUnknownVersion = errors.New("state: unknown schema version")
	// ErrBadMigration means a migration step was registered wrongly.
	ErrBadMigration = errors.New("state: bad migration")

	// ErrInvalidParticipant means a Participant cannot be registered: its
	// name breaks the naming rule or it lacks Capture or Restore.
	ErrInvalidParticipant = errors.New("state: invalid participant")
	// ErrDuplicateParticipant means a Participant with the same name is
	// already registered.
	ErrDuplicateParticipant = errors.New("state: participant already registered")
	// ErrParticipantPanicked means a participant's Freeze, Thaw, Capture,
	// Restore, Reset or PreCopy callback panicked. The registry recovered, so the process goes on;
	// the error is a *PanicError that names the participant and callback.
	ErrParticipantPanicked = errors.New("state: participant panicked")
	// ErrPartialRestore means a snapshot failed to restore and the
	// participants it had already restored could not all be put back (a
	// Reset panicked, or the copy of a participant's previous state did
	// not restore): the process holds a mix of restored and initial state
	// and must not serve on it. The error names the participants left
	// restored.
	ErrPartialRestore = errors.New("state: restore failed and could not be undone")
	// ErrInvalidOptions means NewRegistry was given options it cannot use.
	ErrInvalidOptions = errors.New("state: invalid options")
	// ErrFrozen means the call is not allowed while the registry is frozen
	// (Register, a second Freeze).
	ErrFrozen = errors.New("state: registry is frozen")
	// ErrPreCopy means the rounds of a pre-copy handoff
	// (Participant.PreCopy) do not match: a delta for a section that the
	// first round did not restore, a section restored by the first round
	// and missing from the second or sent whole in it, a first round read
	// as a whole snapshot or the reverse, or a first round that the writer
	// or reader cannot take for a section.
	ErrPreCopy = errors.New("state: pre-copy rounds do not match")

	// ErrUnknownSection means a snapshot holds a section that no
	// participant of the reading process registered, and the reader's
	// Options.UnknownSections is FailUnknown.
	ErrUnknownSection = errors.New("state: unknown section")
	// ErrDuplicateSection means a snapshot holds the same section twice.
	ErrDuplicateSection = errors.New("state: duplicate section")
	// ErrCorrupt means the snapshot bytes are damaged or truncated: a
	// checksum does not match, a length is out of range, or the data
	// ends early.
	ErrCorrupt = errors.New("state: corrupt snapshot")
	// ErrTooLarge means the snapshot exceeds Options.MaxSize.
	ErrTooLarge = errors.New("state: snapshot too large")
	// ErrBadMagic means the bytes do not start like a baton snapshot (or
	// a transport header): they are something else entirely.
	ErrBadMagic = errors.New("state: bad magic, not a baton snapshot")
	// ErrFormatVersion means the snapshot (or transport header) uses a
	// format version this binary does not read.
	ErrFormatVersion = errors.New("state: unsupported format version")

	// ErrNoSnapshot means ReadFile found no file: there is nothing to
	// restore, which is the normal case on a first start.
	ErrNoSnapshot = errors.New("state: no snapshot file")
	// ErrMovedAside means ReadFile could not read or restore the file and
	// renamed it to path+".corrupt-<timestamp>" so that it is kept for
	// inspection and does not block the next start. The caller decides
	// whether to start fresh or refuse to start.
	ErrMovedAside = errors.New("state: unreadable snapshot file moved aside")

	// ErrTransport means the peer broke the transport framing of Send and
	// Receive: a wrong header, kind or number of fds.
	ErrTransport = errors.New("state: transport protocol violation")
	// ErrNotSealed means a received memfd lacks one of the seals that make
	// it immutable (shrink, grow, write, seal).
	ErrNotSealed = errors.New("state: memfd is not sealed")
	// ErrNotSupported means the peer sent a snapshot by a means this
	// platform does not have (a memfd outside Linux).
	ErrNotSupported = errors.New("state: not supported on this platform")
)

// A PanicError reports a participant callback that panicked. The registry
// recovers such a panic so that a bug in one component cannot take down the
// process in the middle of a handoff: the old process thaws and keeps
// serving, the new one rejects the snapshot. It wraps ErrParticipantPanicked
// and, if the panic value is an error, that error.
type PanicError struct {
	Participant string // the participant's Name
	Callback    string // "Freeze", "Thaw", "Capture", "Restore", "Reset", or "PreCopy.Want" and the other PreCopy callbacks so named
	Value       any    // what was passed to panic
	Stack       []byte // the panicking goroutine's stack (runtime/debug.Stack), for the log
}

// Error names the participant, the callback and the panic value; the
// stack, many lines long, is in Stack and in the registry's log.
func (e *PanicError) Error() string {
	return fmt.Sprintf("state: participant %q panicked in %s: %v", e.Participant, e.Callback, e.Value)
}

// Unwrap returns ErrParticipantPanicked and the panic value if it is an
// error (such as a runtime.Error).
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrParticipantPanicked, err}
	}
	return []error{ErrParticipantPanicked}
}
