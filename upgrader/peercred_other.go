//go:build !linux

package upgrader

import "net"

// peerAllowed relies on the socket file's 0600 mode where SO_PEERCRED is
// not available.
func peerAllowed(c net.Conn) (uid, pid int, ok bool, err error) { return -1, 0, true, nil }
