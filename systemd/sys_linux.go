//go:build linux

package systemd

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sendNotify sends msg, with fds as SCM_RIGHTS, to the datagram socket addr
// ("@name" is abstract: x/sys/unix turns the '@' into the leading NUL).
// The kernel attaches our credentials, which systemd (SO_PASSCRED) uses to
// check NotifyAccess=.
func sendNotify(addr string, msg []byte, fds []int, timeout time.Duration) error {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_SNDTIMEO", err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(s, msg, oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL); err != nil {
		return &os.PathError{Op: "sendmsg", Path: addr, Err: err}
	}
	return nil
}

// monotonicNow reads CLOCK_MONOTONIC, the clock systemd's MONOTONIC_USEC=
// refers to (Go's monotonic clock readings are not exposed as values).
func monotonicNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	return time.Duration(ts.Nano()), nil
}

// openFileLimit is the soft RLIMIT_NOFILE: no descriptor number reaches it.
func openFileLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	return rl.Cur, nil
}

// checkFDOpen fails if fd is not a descriptor this process inherited. A
// descriptor that crossed exec cannot be close-on-exec; one that is was
// opened by this process (the Go runtime keeps its cgroup files at 3 and
// 4), and taking it would close it under its owner.
func checkFDOpen(fd int) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return fmt.Errorf("fd %d: %w", fd, err)
	}
	if flags&unix.FD_CLOEXEC != 0 {
		return fmt.Errorf("fd %d is close-on-exec: this process opened it, nobody passed it", fd)
	}
	return nil
}

// adoptFD makes an inherited descriptor close-on-exec, so that no child
// inherits it by accident, and non-blocking, so that the runtime poller can
// use it (the previous holder may have switched it to blocking with
// (*os.File).Fd(), and the flag lives in the shared open file description).
func adoptFD(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return os.NewSyscallError("fcntl F_SETFD", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return os.NewSyscallError("fcntl F_SETFL", err)
	}
	return nil
}

// socketInfo returns the socket type (SOCK_STREAM, SOCK_DGRAM, …) of fd and
// whether it is listening; err wraps ENOTSOCK for anything but a socket.
func socketInfo(fd int) (sotype int, listening bool, err error) {
	sotype, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, false, os.NewSyscallError("getsockopt SO_TYPE", err)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return 0, false, os.NewSyscallError("getsockopt SO_ACCEPTCONN", err)
	}
	return sotype, acc == 1, nil
}
