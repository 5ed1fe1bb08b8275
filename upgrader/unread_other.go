//go:build !linux

package upgrader

import "net"

// unread cannot look into the socket here: only the idle grace protects an
// idle connection's late request.
func unread(c net.Conn) int { return 0 }
