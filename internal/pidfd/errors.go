package pidfd

import "errors"

var (
	// ErrNotSupported means this system has no pidfds (they are Linux's,
	// since 5.3).
	ErrNotSupported = errors.New("pidfd: not supported on this system")
	// ErrNoProcess means no process has the pid: it has exited and been
	// reaped, or never existed.
	ErrNoProcess = errors.New("pidfd: no such process")
)
