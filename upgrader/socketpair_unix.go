//go:build unix

package upgrader

import (
	"os"

	"golang.org/x/sys/unix"
)

const msgTrunc = unix.MSG_TRUNC

// newSocketPair returns the two ends of a close-on-exec SOCK_SEQPACKET
// socket pair: datagrams keep their boundaries and carry SCM_RIGHTS.
func newSocketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "baton-handoff-parent"), os.NewFile(uintptr(fds[1]), "baton-handoff-child"), nil
}
