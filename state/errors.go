package state

import "errors"

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
	// ErrInvalidOptions means NewRegistry was given options it cannot use.
	ErrInvalidOptions = errors.New("state: invalid options")
	// ErrFrozen means the call is not allowed while the registry is frozen
	// (Register, a second Freeze).
	ErrFrozen = errors.New("state: registry is frozen")

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
