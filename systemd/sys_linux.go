//go:build linux

package systemd

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/procfd"
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

// inodeOf returns the inode of c's descriptor: two descriptors of one
// socket have the same.
func inodeOf(c syscall.Conn) (uint64, error) { return procfd.Inode(c) }

// pollable returns a close-on-exec, non-blocking duplicate of f, on which
// SetReadDeadline works, and closes f. Descriptors passed by tableflip
// arrive blocking: os.StartProcess switched them with Fd().
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, os.NewSyscallError("fcntl F_SETFL", err)
	}
	return os.NewFile(uintptr(dup), f.Name()), nil
}

// openSocket is a duplicate of a listening TCP socket of this process.
type openSocket struct {
	fd   int
	ino  uint64
	addr *net.TCPAddr
}

func (s openSocket) close() { unix.Close(s.fd) }

// tcpListeners returns a close-on-exec duplicate of every listening TCP
// socket open in this process, one per socket, found in /proc/self/fd. The
// caller closes them.
func tcpListeners() ([]openSocket, error) {
	all, err := procfd.Sockets()
	if err != nil {
		return nil, err
	}
	var socks []openSocket
	seen := make(map[uint64]bool)
	for _, sock := range all {
		fd, ino := sock.FD, sock.Inode
		if seen[ino] {
			continue
		}
		// The descriptor may have been closed, even reused, since it was
		// listed: work on a duplicate, and check it is that socket.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if addr := listeningTCP(dup, ino); addr != nil {
			seen[ino] = true
			socks = append(socks, openSocket{fd: dup, ino: ino, addr: addr})
			continue
		}
		unix.Close(dup)
	}
	return socks, nil
}

// listeningTCP returns fd's local address if fd is the socket with inode ino
// and a listening TCP socket, nil otherwise.
func listeningTCP(fd int, ino uint64) *net.TCPAddr {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Ino != ino {
		return nil
	}
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
		return nil
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
		return nil
	}
	// Go listens with MPTCP where the kernel has it (Go 1.24 and later),
	// which falls back to TCP for every client that does not speak it.
	if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil ||
		p != unix.IPPROTO_TCP && p != unix.IPPROTO_MPTCP {
		return nil
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		addr := &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				addr.Zone = ifi.Name
			}
		}
		return addr
	}
	return nil
}
