package upgrader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestListenSameAddressTwice: tableflip names a socket by its network and
// address, so a second Listen of the same pair (two "127.0.0.1:0", say)
// would replace the first in what is handed over, and the new process
// would mix them up. It is refused, and the first listener keeps working.
func TestListenSameAddressTwice(t *testing.T) {
	u, _ := newTestUpgrader(t, Options{})
	for _, c := range []struct{ kind, network, addr string }{
		{"listener", "tcp", "127.0.0.1:0"},
		{"packet", "udp", "127.0.0.1:0"},
	} {
		listen := func() (any, error) {
			if c.kind == "packet" {
				return u.ListenPacket(c.network, c.addr)
			}
			return u.Listen(c.network, c.addr)
		}
		first, err := listen()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := listen(); !errors.Is(err, ErrListenerTaken) {
			t.Errorf("second %s %s %s: %v, want ErrListenerTaken", c.kind, c.network, c.addr, err)
		}
		if n := len(u.Listeners()); n == 0 || first == nil {
			t.Fatalf("the first %s is gone", c.kind)
		}
	}
	if n := len(u.Listeners()); n != 2 {
		t.Errorf("%d listeners recorded, want the 2 first ones", n)
	}
}

// TestListenAddrInUseKeepsErrno: a listen on a taken address fails with an
// error that errors.Is matches to syscall.EADDRINUSE, for TCP and UDP, so
// that a caller can tell "in use" from other failures. (tableflip's own
// Listen formats net's error with %s, which loses the errno.) tableflip
// allows one Upgrader per process, so the check runs in a child: this test
// binary again.
func TestListenAddrInUseKeepsErrno(t *testing.T) {
	if addr := os.Getenv("BATON_TEST_LISTEN_INUSE"); addr != "" {
		listenInUseChild(addr)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenAddrInUseKeepsErrno$")
	cmd.Env = append(os.Environ(), "BATON_TEST_LISTEN_INUSE="+ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"tcp: EADDRINUSE true", "udp: EADDRINUSE true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child said:\n%s\nwant %q", out, want)
		}
	}
}

func listenInUseChild(addr string) {
	u, err := New(Options{})
	if err != nil {
		fmt.Println("New:", err)
		return
	}
	defer u.Close()
	_, err = u.Listen("tcp", addr)
	fmt.Printf("tcp: EADDRINUSE %v: %v\n", errors.Is(err, syscall.EADDRINUSE), err)
	_, err = u.ListenPacket("udp", addr)
	fmt.Printf("udp: EADDRINUSE %v: %v\n", errors.Is(err, syscall.EADDRINUSE), err)
}
