package upgrader

import (
	"fmt"
	"net"
	"syscall"
)

// adopted is a listener received from outside the upgrader, such as a
// systemd socket-activated one, waiting for the Listen call that takes it.
type adopted struct {
	name string
	ln   net.Listener
}

// AdoptListener offers ln, received from outside (systemd socket
// activation, the fd store), to the next Listen call whose address matches
// it: by name (addr equal to name), or by the socket's own address. The
// listener is then handed on to later generations like any other.
// Unclaimed listeners are closed at Ready.
func (u *Upgrader) AdoptListener(name string, ln net.Listener) error {
	if _, ok := ln.(syscall.Conn); !ok {
		return fmt.Errorf("adopt %s: %T cannot be passed to a new process", name, ln)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.adopted = append(u.adopted, adopted{name: name, ln: ln})
	return nil
}

// takeAdopted returns the adopted listener matching network and addr, and
// forgets it.
func (u *Upgrader) takeAdopted(network, addr string) net.Listener {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, a := range u.adopted {
		if a.name == addr || sameAddr(network, addr, a.ln.Addr()) {
			u.adopted = append(u.adopted[:i], u.adopted[i+1:]...)
			return a.ln
		}
	}
	return nil
}

// closeUnadopted closes the adopted listeners no Listen call took.
func (u *Upgrader) closeUnadopted() []string {
	u.mu.Lock()
	left := u.adopted
	u.adopted = nil
	u.mu.Unlock()
	var names []string
	for _, a := range left {
		names = append(names, a.name+" ("+a.ln.Addr().String()+")")
		a.ln.Close()
	}
	return names
}

// sameAddr reports whether the listening address got is the one a Listen
// call asks for with network and addr. An unspecified host matches any.
func sameAddr(network, addr string, got net.Addr) bool {
	switch g := got.(type) {
	case *net.TCPAddr:
		if network != "tcp" && network != "tcp4" && network != "tcp6" {
			return false
		}
		want, err := net.ResolveTCPAddr(network, addr)
		if err != nil || want.Port != g.Port {
			return false
		}
		return want.IP == nil || want.IP.IsUnspecified() && g.IP.IsUnspecified() || want.IP.Equal(g.IP)
	case *net.UnixAddr:
		return (network == "unix" || network == "unixpacket") && g.Name == addr
	}
	return false
}
