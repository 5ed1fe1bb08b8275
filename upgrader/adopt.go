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
		if a.name == addr || (ListenerInfo{Network: network, Addr: addr}).Serves(a.ln.Addr()) {
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
