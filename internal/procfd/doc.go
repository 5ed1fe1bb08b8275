// Package procfd lists the sockets open in this process, as the kernel shows
// them in /proc/self/fd, for the two places that look for listeners nobody
// named: the upgrader's warning about listeners it will not hand on, and the
// systemd integration's fd store.
//
// What it returns is a snapshot: a descriptor may be closed, even reused for
// another file, by the time the caller looks at it. Callers that act on a
// descriptor duplicate it and compare the duplicate's inode (Inode) with the
// one listed; callers that only warn may accept the race.
//
// It works on Linux only; elsewhere every function returns ErrNotSupported.
package procfd

import "errors"

// ErrNotSupported is returned on platforms without /proc/self/fd (anything
// but Linux).
var ErrNotSupported = errors.New("procfd: /proc/self/fd is not supported on this platform")

// Socket is a descriptor of this process that refers to a socket, and the
// socket's inode: two descriptors of one socket have the same.
type Socket struct {
	FD    int
	Inode uint64
}
