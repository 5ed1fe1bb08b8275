//go:build linux

package sdupgrade

import (
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/procfd"
)

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
	file *os.File
	ino  uint64
	addr *net.TCPAddr
}

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
			socks = append(socks, openSocket{file: os.NewFile(uintptr(dup), "socket:"+addr.String()), ino: ino, addr: addr})
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
