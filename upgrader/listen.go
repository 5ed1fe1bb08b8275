package upgrader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/cloudflare/tableflip"
)

// ListenerInfo describes one socket handed between generations.
type ListenerInfo struct {
	Kind      string `json:"kind"`    // "listener" or "packet"
	Network   string `json:"network"` // "tcp", "udp", "unix", ...
	Addr      string `json:"addr"`
	Inherited bool   `json:"inherited"` // received from the previous generation
}

// Serves reports whether a socket bound to got is the one l asks for: for
// TCP the same port and the same IP, an unspecified one (or none) on the
// asking side matching any; for Unix sockets the same path. A name such as
// "http" (a socket activated by systemd) or port 0 matches nothing.
func (l ListenerInfo) Serves(got net.Addr) bool {
	switch g := got.(type) {
	case *net.TCPAddr:
		if l.Network != "tcp" && l.Network != "tcp4" && l.Network != "tcp6" {
			return false
		}
		want, err := net.ResolveTCPAddr(l.Network, l.Addr)
		if err != nil || want.Port != g.Port {
			return false
		}
		return want.IP == nil || want.IP.IsUnspecified() && g.IP.IsUnspecified() || want.IP.Equal(g.IP)
	case *net.UnixAddr:
		return (l.Network == "unix" || l.Network == "unixpacket") && g.Name == l.Addr
	}
	return false
}

// Listen returns the listener for network and addr that the previous
// generation handed over, or creates it. Use it for every listener: one
// opened elsewhere is not handed on, and the new process then fails with
// "address already in use". The listener is closed when Shutdown starts.
// With Options.Probation a TCP listener is a wrapper (not a
// *net.TCPListener) that the probation can pause.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	if isUnixNetwork(network) {
		c, err := u.takeUnix("listener", network, addr)
		ln, _ := c.(net.Listener)
		return ln, err
	}
	if err := u.checkFree("listener", network, addr); err != nil {
		return nil, err
	}
	ln, err := u.tf.Listener(network, addr)
	inherited := ln != nil
	if err == nil && ln == nil {
		if ln = u.takeAdopted(network, addr); ln != nil {
			inherited = true
			err = u.tf.AddListener(network, addr, ln.(tableflip.Listener))
		}
	}
	if err == nil && ln == nil {
		ln, err = u.listenNew(network, addr)
	}
	if err != nil {
		return nil, u.listenError(network, addr, err)
	}
	if u.opts.Probation > 0 {
		// Stops accepting during a probation, its socket open.
		ln = newPausableListener(ln)
	}
	u.addCloser(ln, ListenerInfo{Kind: "listener", Network: network, Addr: addr, Inherited: inherited})
	return ln, nil
}

// ListenPacket is Listen for packet sockets (udp, unixgram).
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	if isUnixNetwork(network) {
		c, err := u.takeUnix("packet", network, addr)
		pc, _ := c.(net.PacketConn)
		return pc, err
	}
	if err := u.checkFree("packet", network, addr); err != nil {
		return nil, err
	}
	pc, err := u.tf.PacketConn(network, addr)
	inherited := pc != nil
	if err == nil && pc == nil {
		pc, err = u.listenPacketNew(network, addr)
	}
	if err != nil {
		return nil, u.listenError(network, addr, err)
	}
	u.addCloser(pc, ListenerInfo{Kind: "packet", Network: network, Addr: addr, Inherited: inherited})
	return pc, nil
}

// listenNew opens a listener that was not inherited and adds it to what is
// handed over. It listens itself rather than through tableflip's Listen,
// which formats net's error with %s: the error here keeps its cause, so
// that errors.Is(err, syscall.EADDRINUSE) holds for a taken address.
func (u *Upgrader) listenNew(network, addr string) (net.Listener, error) {
	ln, err := u.listenConfig().Listen(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(tableflip.Listener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("%T cannot be handed over (no File method)", ln)
	}
	if err := u.tf.AddListener(network, addr, tl); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// listenPacketNew is listenNew for packet sockets.
func (u *Upgrader) listenPacketNew(network, addr string) (net.PacketConn, error) {
	pc, err := u.listenConfig().ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	tp, ok := pc.(tableflip.PacketConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("%T cannot be handed over (no SyscallConn method)", pc)
	}
	if err := u.tf.AddPacketConn(network, addr, tp); err != nil {
		pc.Close()
		return nil, err
	}
	return pc, nil
}

// listenConfig is Options.ListenConfig, or the zero one.
func (u *Upgrader) listenConfig() *net.ListenConfig {
	if lc := u.opts.ListenConfig; lc != nil {
		return lc
	}
	return &net.ListenConfig{}
}

// checkFree refuses a second listener of the same kind, network and
// address: the name it is handed over under would be the first one's.
func (u *Upgrader) checkFree(kind, network, addr string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, l := range u.infos {
		if l.Kind == kind && l.Network == network && l.Addr == addr {
			return fmt.Errorf("listen %s %s: %w", network, addr, ErrListenerTaken)
		}
	}
	return nil
}

func (u *Upgrader) listenError(network, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) && u.tf.HasParent() {
		return fmt.Errorf("listen %s %s: %w (the previous generation holds this address without having "+
			"handed it over: open every listener with Upgrader.Listen)", network, addr, err)
	}
	return fmt.Errorf("listen %s %s: %w", network, addr, err)
}

func (u *Upgrader) addCloser(c io.Closer, info ListenerInfo) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closers = append(u.closers, c)
	u.infos = append(u.infos, info)
	if u.metrics != nil {
		u.metrics.listeners.WithLabelValues(info.Network).Inc()
	}
}

// Listeners describes the sockets taken through Listen and ListenPacket.
func (u *Upgrader) Listeners() []ListenerInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]ListenerInfo(nil), u.infos...)
}

// File returns the file the previous generation handed over under name, or
// nil if there is none.
func (u *Upgrader) File(name string) (*os.File, error) { return u.tf.File(name) }

// AddFile hands f on to the next generation under name. f may be closed
// after the call.
func (u *Upgrader) AddFile(name string, f *os.File) error { return u.tf.AddFile(name, f) }

func (u *Upgrader) warnStrayListeners() {
	u.mu.Lock()
	known := append([]io.Closer(nil), u.closers...)
	u.mu.Unlock()
	stray, err := strayListeners(known)
	if err != nil {
		u.log.Debug("cannot check for listeners opened outside the upgrader", "err", err)
		return
	}
	for _, addr := range stray {
		u.log.Warn("listener not opened through the upgrader: the new process will not inherit it "+
			"and will fail with \"address already in use\"", "addr", addr)
	}
}
