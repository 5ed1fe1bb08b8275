//go:build linux

package procfd

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sockets returns every descriptor of this process that refers to a socket,
// in descriptor order, read from /proc/self/fd. Entries that vanish while it
// reads (the descriptor ReadDir itself used, one closed meanwhile) are left
// out.
func Sockets() ([]Socket, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var socks []Socket
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
		if err != nil {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		socks = append(socks, Socket{FD: fd, Inode: ino})
	}
	return socks, nil
}

// Inode returns the inode of c's descriptor (a listener, a connection, an
// *os.File), read with fstat under SyscallConn().Control so that the
// descriptor cannot be closed meanwhile, and without (*os.File).Fd, which
// would switch it to blocking mode.
func Inode(c syscall.Conn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		st   unix.Stat_t
		ferr error
	)
	if err := rc.Control(func(fd uintptr) { ferr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	if ferr != nil {
		return 0, os.NewSyscallError("fstat", ferr)
	}
	return st.Ino, nil
}
