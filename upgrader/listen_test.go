package upgrader

import (
	"errors"
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
