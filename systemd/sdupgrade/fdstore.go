package sdupgrade

import (
	"net"
	"strings"

	"github.com/batonhq/baton/upgrader"
)

// storeListenersLocked hands systemd's fd store a duplicate of each listening
// TCP socket the upgrader serves: one FDSTORE=1 message per socket, named as
// systemd named it when it passed it, or after its address. systemd ignores a
// socket it already holds, so a later generation storing again changes
// nothing. Unix sockets stay out: their files are removed at a stop and made
// anew at the start, and the control socket's would look taken.
func (i *Integration) storeListenersLocked() {
	socks, err := tcpListeners()
	if err != nil {
		i.log.Warn("systemd: cannot list the listeners for the fd store", "err", err)
		return
	}
	infos := i.u.Listeners()
	var stored []string
	for _, s := range socks {
		name, ok := i.names[s.ino]
		if !ok {
			if !servedBy(infos, s.addr) {
				s.file.Close()
				continue // not the upgrader's: after a restart no Listen would take it
			}
			name = strings.ReplaceAll(s.addr.String(), ":", "_")
		}
		// StoreFDs checks the name against systemd's rules
		// before it sends anything.
		if _, err := i.n.StoreFDs(name, s.file); err != nil {
			i.log.Warn("systemd: listener not stored", "name", name, "addr", s.addr.String(), "err", err)
		} else {
			stored = append(stored, name)
		}
		s.file.Close()
	}
	if len(stored) > 0 {
		i.log.Info("systemd: listeners in the fd store", "names", strings.Join(stored, ","))
	}
}

// servedBy reports whether one of the upgrader's listeners is bound to addr.
func servedBy(infos []upgrader.ListenerInfo, addr *net.TCPAddr) bool {
	for _, l := range infos {
		if l.Kind == "listener" && l.Serves(addr) {
			return true
		}
	}
	return false
}
