//go:build linux

package procfd_test

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/batonhq/baton/internal/procfd"
)

// TestSockets opens a listener, a UDP socket and a pipe and checks that
// Sockets lists both sockets, each under the inode Inode gives it, and not
// the pipe.
func TestSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	want := map[uint64]int{} // inode -> fd
	for _, c := range []syscall.Conn{ln.(*net.TCPListener), pc.(*net.UDPConn)} {
		ino, err := procfd.Inode(c)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := c.SyscallConn()
		rc.Control(func(fd uintptr) { want[ino] = int(fd) })
	}
	pipeIno, err := procfd.Inode(r)
	if err != nil {
		t.Fatal(err)
	}

	socks, err := procfd.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Inode == pipeIno {
			t.Errorf("the pipe listed as a socket: %+v", s)
		}
		if fd, ok := want[s.Inode]; ok && fd == s.FD {
			delete(want, s.Inode)
		}
	}
	if len(want) != 0 {
		t.Errorf("sockets not listed (inode -> fd): %v; listed %+v", want, socks)
	}
}
