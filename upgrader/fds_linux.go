package upgrader

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/procfd"
)

// strayListeners lists the addresses of listening sockets open in this
// process that are not among known: listeners a new process will not
// inherit. It reads /proc/self/fd.
func strayListeners(known []io.Closer) ([]string, error) {
	inodes := make(map[uint64]bool, len(known))
	for _, c := range known {
		sc, ok := c.(syscall.Conn)
		if !ok {
			continue
		}
		if ino, err := procfd.Inode(sc); err == nil {
			inodes[ino] = true
		}
	}
	socks, err := procfd.Sockets()
	if err != nil {
		return nil, err
	}
	var stray []string
	for _, s := range socks {
		if inodes[s.Inode] {
			continue
		}
		// The fd may have been closed and reused since the listing; the
		// worst outcome is a missed or spurious warning.
		if on, err := unix.GetsockoptInt(s.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
			continue
		}
		if t, err := unix.GetsockoptInt(s.FD, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t == unix.SOCK_DGRAM {
			continue
		}
		sa, err := unix.Getsockname(s.FD)
		if err != nil {
			continue
		}
		stray = append(stray, sockaddrString(sa))
	}
	return stray, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		return "unix:" + a.Name
	}
	return fmt.Sprintf("%T", sa)
}
