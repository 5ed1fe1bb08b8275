package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ActivationOptions configure Files, Listeners and PacketConns. The zero
// value removes the LISTEN_* variables.
type ActivationOptions struct {
	// KeepEnvironment leaves LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in
	// the process environment. By default they are removed, whether or not
	// they were meant for this process, so that no child or grandchild
	// inherits them: the descriptors are close-on-exec and would not be
	// there, and a child that happened to get the pid LISTEN_PID names
	// would take whatever it has at fd 3 for a socket.
	KeepEnvironment bool
}

// File is a descriptor passed by socket activation or given back by the fd
// store, with the name systemd gave it (FileDescriptorName= of the socket
// unit, FDNAME= of the store, or DefaultFDName).
type File struct {
	// Name is the descriptor's entry of LISTEN_FDNAMES. Names need not be
	// unique: every socket of one .socket unit shares the unit's name.
	Name string
	// File owns the descriptor: close-on-exec and non-blocking. Use
	// File.SyscallConn to reach the raw descriptor; File.Fd would switch
	// it to blocking mode for every holder of the socket.
	File *os.File
}

// Listener is a socket-activated listening stream socket and its name.
type Listener struct {
	Name     string
	Listener net.Listener
}

// PacketConn is a socket-activated datagram socket and its name.
type PacketConn struct {
	Name       string
	PacketConn net.PacketConn
}

// Files returns the descriptors systemd passed to this process, in order
// from fd 3 (ListenFDsStart), like sd_listen_fds_with_names(3):
//
//   - nothing (nil, nil) when LISTEN_PID is unset or names another process,
//     or LISTEN_FDS is unset or 0: not being socket-activated is normal;
//   - an error wrapping ErrInvalidActivation when a variable is malformed,
//     LISTEN_FDNAMES has the wrong number of names, or a descriptor is not
//     open. All checks run before any descriptor is touched.
//
// Every returned descriptor is made close-on-exec and non-blocking (the
// flag belongs to the open file description, so systemd's copy changes too;
// it does not mind). The variables are removed from the environment unless
// opts.KeepEnvironment, so a second call returns nothing. The caller owns
// the Files.
func Files(opts ActivationOptions) ([]File, error) {
	pidStr, hasPID := os.LookupEnv(EnvListenPID)
	fdsStr, hasFDs := os.LookupEnv(EnvListenFDs)
	namesStr, hasNames := os.LookupEnv(EnvListenFDNames)
	if !opts.KeepEnvironment {
		os.Unsetenv(EnvListenPID)
		os.Unsetenv(EnvListenFDs)
		os.Unsetenv(EnvListenFDNames)
	}
	if !hasPID || !hasFDs {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("%w: %s=%q is not a pid", ErrInvalidActivation, EnvListenPID, pidStr)
	}
	if pid != os.Getpid() {
		return nil, nil // meant for another process (our parent, typically)
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%w: %s=%q is not a descriptor count", ErrInvalidActivation, EnvListenFDs, fdsStr)
	}
	if n == 0 {
		return nil, nil
	}
	limit, err := openFileLimit()
	if err != nil {
		return nil, err
	}
	if limit < ListenFDsStart || uint64(n) > limit-ListenFDsStart {
		return nil, fmt.Errorf("%w: %s=%d exceeds the open file limit %d", ErrInvalidActivation, EnvListenFDs, n, limit)
	}
	names := make([]string, n)
	if hasNames {
		names = strings.Split(namesStr, ":")
		if len(names) != n {
			return nil, fmt.Errorf("%w: %s has %d names for %s=%d", ErrInvalidActivation, EnvListenFDNames, len(names), EnvListenFDs, n)
		}
	} else {
		for i := range names {
			names[i] = DefaultFDName
		}
	}
	for i := range n {
		if err := checkFDOpen(ListenFDsStart + i); err != nil {
			return nil, fmt.Errorf("%w: %s=%d: %w", ErrInvalidActivation, EnvListenFDs, n, err)
		}
	}
	files := make([]File, n)
	for i := range n {
		fd := ListenFDsStart + i
		if err := adoptFD(fd); err != nil {
			for _, f := range files[:i] {
				f.File.Close()
			}
			return nil, fmt.Errorf("systemd: activated fd %d (%s): %w", fd, names[i], err)
		}
		files[i] = File{Name: names[i], File: os.NewFile(uintptr(fd), names[i])}
	}
	return files, nil
}

// Listeners returns the activated descriptors as net.Listeners. It is meant
// for units whose sockets are all ListenStream= (TCP or Unix stream, or
// sequential packet): a descriptor of another kind fails the call with
// ErrSocketType, and every descriptor is closed. For mixed units use Files
// and File.Listener / File.PacketConn. See Files for the other cases.
func Listeners(opts ActivationOptions) ([]Listener, error) {
	files, err := Files(opts)
	if err != nil {
		return nil, err
	}
	lns := make([]Listener, 0, len(files))
	for i, f := range files {
		ln, err := f.Listener()
		if err != nil {
			for _, l := range lns {
				l.Listener.Close()
			}
			for _, rest := range files[i:] {
				rest.File.Close()
			}
			return nil, err
		}
		lns = append(lns, Listener{Name: f.Name, Listener: ln})
	}
	return lns, nil
}

// PacketConns is Listeners for units whose sockets are all ListenDatagram=.
func PacketConns(opts ActivationOptions) ([]PacketConn, error) {
	files, err := Files(opts)
	if err != nil {
		return nil, err
	}
	pcs := make([]PacketConn, 0, len(files))
	for i, f := range files {
		pc, err := f.PacketConn()
		if err != nil {
			for _, p := range pcs {
				p.PacketConn.Close()
			}
			for _, rest := range files[i:] {
				rest.File.Close()
			}
			return nil, err
		}
		pcs = append(pcs, PacketConn{Name: f.Name, PacketConn: pc})
	}
	return pcs, nil
}

// Listener converts f, which must be a listening stream socket, into a
// net.Listener and closes f.File: the listener holds its own duplicate. On
// error (wrapping ErrSocketType for another kind of descriptor) f.File is
// left open.
func (f File) Listener() (net.Listener, error) {
	if err := f.checkSocket(func(sotype int, listening bool) bool {
		return sotype != syscall.SOCK_DGRAM && listening
	}, "a listening stream socket"); err != nil {
		return nil, err
	}
	ln, err := net.FileListener(f.File)
	if err != nil {
		return nil, fmt.Errorf("systemd: activated socket %q: %w", f.Name, err)
	}
	f.File.Close()
	return ln, nil
}

// PacketConn converts f, which must be a datagram socket, into a
// net.PacketConn and closes f.File. On error (wrapping ErrSocketType for
// another kind of descriptor) f.File is left open.
func (f File) PacketConn() (net.PacketConn, error) {
	if err := f.checkSocket(func(sotype int, _ bool) bool {
		return sotype == syscall.SOCK_DGRAM
	}, "a datagram socket"); err != nil {
		return nil, err
	}
	pc, err := net.FilePacketConn(f.File)
	if err != nil {
		return nil, fmt.Errorf("systemd: activated socket %q: %w", f.Name, err)
	}
	f.File.Close()
	return pc, nil
}

func (f File) checkSocket(ok func(sotype int, listening bool) bool, want string) error {
	rc, err := f.File.SyscallConn()
	if err != nil {
		return fmt.Errorf("systemd: activated descriptor %q: %w", f.Name, err)
	}
	var (
		sotype    int
		listening bool
		ierr      error
	)
	if err := rc.Control(func(fd uintptr) { sotype, listening, ierr = socketInfo(int(fd)) }); err != nil {
		return fmt.Errorf("systemd: activated descriptor %q: %w", f.Name, err)
	}
	if errors.Is(ierr, syscall.ENOTSOCK) {
		return fmt.Errorf("%w: %q is not a socket, want %s", ErrSocketType, f.Name, want)
	}
	if ierr != nil {
		return fmt.Errorf("systemd: activated descriptor %q: %w", f.Name, ierr)
	}
	if !ok(sotype, listening) {
		return fmt.Errorf("%w: %q (type %d, listening %t) is not %s", ErrSocketType, f.Name, sotype, listening, want)
	}
	return nil
}
