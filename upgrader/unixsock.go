package upgrader

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Unix sockets do not travel under tableflip's listener names: tableflip
// unlinks the path of every Unix socket it holds under those when it stops
// without having upgraded, and a new process that fails stops that way, so
// it removed the files of the sockets its parent still serves (issue 13,
// item 1). They travel as named files instead, which tableflip only closes,
// and the Upgrader decides who removes a path: only the last owner, the
// process that serves the socket and stops without handing it over. A new
// process owns what it inherited once it is ready, never before.
//
// The names are unixFilePrefix and an index, 0 to n-1 with none missing,
// so that the new process finds them all without being told; the network
// and the path are read from the socket itself. A socket received from
// outside (systemd socket activation) travels under unixExtPrefix and is
// never removed: its owner is the one that made it.
const (
	unixFilePrefix = "baton.unix."
	unixExtPrefix  = "baton.unix-ext."
)

// unixSock is one Unix socket this process inherited or opened.
type unixSock struct {
	network, path string
	// file is the inherited socket until a Listen call takes it.
	file *os.File
	// external: received from outside the upgrader; nobody removes it.
	external bool
	// mine: this process owns the path and removes it at its stop unless
	// it handed the socket over. Set for the sockets it created, and for
	// the inherited ones once it is ready.
	mine bool
}

func isUnixNetwork(network string) bool {
	return network == "unix" || network == "unixpacket" || network == "unixgram"
}

// takeInheritedUnix collects the Unix sockets the previous generation
// handed over, as New starts.
func (u *Upgrader) takeInheritedUnix() {
	for _, prefix := range []string{unixFilePrefix, unixExtPrefix} {
		for i := 0; ; i++ {
			f, err := u.tf.File(prefix + strconv.Itoa(i))
			if err != nil || f == nil {
				break
			}
			network, path, err := unixSocketName(f)
			if err != nil {
				u.log.Warn("inherited Unix socket unusable: closed", "name", prefix+strconv.Itoa(i), "err", err)
				f.Close()
				continue
			}
			u.unixIn = append(u.unixIn, &unixSock{network: network, path: path, file: f, external: prefix == unixExtPrefix})
		}
	}
}

// unixSocketName reads a Unix socket's network and path from the socket.
func unixSocketName(f *os.File) (network, path string, err error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return "", "", err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		var typ int
		if typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr != nil {
			return
		}
		ua, ok := sa.(*unix.SockaddrUnix)
		if !ok {
			serr = fmt.Errorf("not a Unix socket: %T", sa)
			return
		}
		path = ua.Name
		switch typ {
		case unix.SOCK_STREAM:
			network = "unix"
		case unix.SOCK_SEQPACKET:
			network = "unixpacket"
		case unix.SOCK_DGRAM:
			network = "unixgram"
		default:
			serr = fmt.Errorf("socket type %d", typ)
		}
	})
	if err == nil {
		err = serr
	}
	return network, path, err
}

// inheritedUnix returns the inherited socket for network and path, and
// forgets it, or nil.
func (u *Upgrader) inheritedUnix(network, path string) *unixSock {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, s := range u.unixIn {
		if s.network == network && s.path == path {
			u.unixIn = append(u.unixIn[:i], u.unixIn[i+1:]...)
			return s
		}
	}
	return nil
}

// takeUnix is Listen (kind "listener") and ListenPacket (kind "packet") for
// Unix sockets: it takes the socket and records it among the listeners.
func (u *Upgrader) takeUnix(kind, network, addr string) (syscall.Conn, error) {
	c, inherited, err := u.listenUnix(network, addr, kind == "packet")
	if err != nil {
		return nil, u.listenError(network, addr, err)
	}
	if ln, ok := c.(net.Listener); ok && u.opts.Probation > 0 && addr != u.opts.ControlSocket {
		// Stops accepting during a probation, its socket open, as a TCP
		// listener does. The control socket is not paused: this process
		// answers it until the commit.
		c = newPausableListener(ln)
	}
	u.addCloser(c.(io.Closer), ListenerInfo{Kind: kind, Network: network, Addr: addr, Inherited: inherited})
	return c, nil
}

// listenUnix takes a Unix socket: the inherited
// socket, one from a parent of an older release (under tableflip's name,
// which keeps its old rules), an adopted one, or a new one.
func (u *Upgrader) listenUnix(network, addr string, packet bool) (c syscall.Conn, inherited bool, err error) {
	if s := u.inheritedUnix(network, addr); s != nil {
		defer s.file.Close()
		var v any
		if packet {
			v, err = net.FilePacketConn(s.file)
		} else {
			v, err = net.FileListener(s.file)
		}
		if err != nil {
			return nil, false, fmt.Errorf("inherited socket: %w", err)
		}
		c = v.(syscall.Conn)
		s.file = nil
		if err := u.handOnUnix(c, s); err != nil {
			c.(io.Closer).Close()
			return nil, false, err
		}
		return c, true, nil
	}
	if packet {
		if pc, err := u.tf.PacketConn(network, addr); err != nil || pc != nil {
			return asConn(pc, err)
		}
	} else if ln, err := u.tf.Listener(network, addr); err != nil || ln != nil {
		return asConn(ln, err)
	}
	if !packet {
		if ln := u.takeAdopted(network, addr); ln != nil {
			if err := u.handOnUnix(ln.(syscall.Conn), &unixSock{network: network, path: addr, external: true}); err != nil {
				ln.Close()
				return nil, false, err
			}
			return ln.(syscall.Conn), true, nil
		}
	}
	lc := u.listenConfig()
	if packet {
		c, err = listenPacketConn(lc, network, addr)
	} else {
		var ln net.Listener
		if ln, err = lc.Listen(context.Background(), network, addr); err == nil {
			// Closing the listener must not remove the path: it
			// lives on in the next generation; release decides.
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			c = ln.(syscall.Conn)
		}
	}
	if err != nil {
		return nil, false, err
	}
	if err := u.handOnUnix(c, &unixSock{network: network, path: addr, mine: true}); err != nil {
		c.(io.Closer).Close()
		return nil, false, err
	}
	return c, false, nil
}

// asConn returns what tableflip handed over under its own name.
func asConn(c any, err error) (syscall.Conn, bool, error) {
	if err != nil {
		return nil, false, err
	}
	return c.(syscall.Conn), true, nil
}

func listenPacketConn(lc *net.ListenConfig, network, addr string) (syscall.Conn, error) {
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(syscall.Conn), nil
}

// handOnUnix registers c for the next generation under the next free name
// and records s as this process's.
func (u *Upgrader) handOnUnix(c syscall.Conn, s *unixSock) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var f *os.File
	var derr error
	err = raw.Control(func(fd uintptr) {
		// A duplicate through the raw fd, not File(), which would
		// share a blocking mode with the listener.
		var dup int
		if dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
			f = os.NewFile(uintptr(dup), s.path)
		}
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("hand on %s %s: %w", s.network, s.path, err)
	}
	defer f.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	prefix, n := unixFilePrefix, &u.unixNext
	if s.external {
		prefix, n = unixExtPrefix, &u.unixExtNext
	}
	if err := u.tf.AddFile(prefix+strconv.Itoa(*n), f); err != nil {
		return fmt.Errorf("hand on %s %s: %w", s.network, s.path, err)
	}
	*n++
	u.unixSocks = append(u.unixSocks, s)
	return nil
}

// ownUnixSockets runs at Ready: the process now serves the Unix sockets it
// inherited and is their owner. Those no Listen call took are closed, and
// their paths removed: no generation will serve them again.
func (u *Upgrader) ownUnixSockets() {
	u.mu.Lock()
	left := u.unixIn
	u.unixIn = nil
	for _, s := range u.unixSocks {
		s.mine = true
	}
	u.mu.Unlock()
	for _, s := range left {
		s.file.Close()
		if !s.external {
			unlinkSocket(s.path)
		}
		u.log.Info("closed an inherited Unix socket no Listen call asked for", "network", s.network, "path", s.path)
	}
}

// releaseUnixSockets runs at the stop. A process that handed its sockets
// over, or that never became ready (the previous generation serves them),
// removes nothing; otherwise the paths of the sockets it owns go. Inherited
// sockets not taken are closed.
func (u *Upgrader) releaseUnixSockets(handedOver bool) {
	u.mu.Lock()
	left, socks := u.unixIn, u.unixSocks
	u.unixIn, u.unixSocks = nil, nil
	u.mu.Unlock()
	for _, s := range left {
		s.file.Close()
	}
	if handedOver {
		return
	}
	for _, s := range socks {
		if s.mine && !s.external {
			unlinkSocket(s.path)
		}
	}
}

// unlinkSocket removes path if it is a Unix socket in the file system (not
// an abstract one, and not a file someone put there since).
func unlinkSocket(path string) {
	if path == "" || strings.HasPrefix(path, "@") {
		return
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
}
