package upgrader

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed checks the credentials of the process at the other end of a
// Unix socket: root and this process's own user are allowed.
func peerAllowed(c net.Conn) (uid, pid int, ok bool, err error) {
	uc, isUnix := c.(*net.UnixConn)
	if !isUnix {
		return -1, 0, false, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, 0, false, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, 0, false, err
	}
	if cerr != nil {
		return -1, 0, false, cerr
	}
	uid, pid = int(cred.Uid), int(cred.Pid)
	return uid, pid, uid == 0 || uid == os.Getuid(), nil
}
