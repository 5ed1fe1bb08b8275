//go:build !linux

package procfd

import "syscall"

// Sockets needs /proc/self/fd: it returns ErrNotSupported.
func Sockets() ([]Socket, error) { return nil, ErrNotSupported }

// Inode returns ErrNotSupported: nothing outside Linux compares inodes with
// Sockets' list.
func Inode(syscall.Conn) (uint64, error) { return 0, ErrNotSupported }
