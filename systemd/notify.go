package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultSendTimeout bounds one notification send. systemd reads its socket
// promptly; a send that blocks longer means the manager is stuck, and a
// caller such as the watchdog must not hang with it.
const DefaultSendTimeout = 5 * time.Second

// NotifierOptions configure NewNotifier. The zero value reads $NOTIFY_SOCKET
// and leaves it set.
type NotifierOptions struct {
	// Socket is the notification socket: an absolute path, or "@name" for
	// a socket in the abstract namespace. Empty means $NOTIFY_SOCKET.
	Socket string

	// UnsetEnvironment removes NOTIFY_SOCKET from the process environment
	// once read, so that no child can notify on the service's behalf.
	// False (the default) keeps it, and that is what an upgrading service
	// needs: the new process is a child of the old one and must be able to
	// notify systemd itself once it is the main process.
	UnsetEnvironment bool

	// SendTimeout bounds each send. Zero means DefaultSendTimeout.
	SendTimeout time.Duration
}

// Notifier sends sd_notify(3) messages to the service manager. A Notifier
// for a process that does not run under systemd (no $NOTIFY_SOCKET) is
// disabled: every send returns (false, nil). The zero Notifier is such a
// disabled one.
//
// A Notifier holds no open descriptor (each send uses a fresh socket, as
// sd_notify does) and never changes after NewNotifier, so it is safe for
// concurrent use.
type Notifier struct {
	socket  string
	timeout time.Duration
}

// NewNotifier returns a Notifier for opts.Socket or $NOTIFY_SOCKET. Not
// running under systemd is not an error: the Notifier is then disabled. The
// error, wrapping ErrInvalidSocket, is for an address systemd would never
// give (relative path, too long).
func NewNotifier(opts NotifierOptions) (*Notifier, error) {
	addr := opts.Socket
	if addr == "" {
		addr = os.Getenv(EnvNotifySocket)
		if opts.UnsetEnvironment {
			os.Unsetenv(EnvNotifySocket)
		}
	}
	if err := checkSocketAddr(addr); err != nil {
		return nil, err
	}
	timeout := opts.SendTimeout
	if timeout <= 0 {
		timeout = DefaultSendTimeout
	}
	return &Notifier{socket: addr, timeout: timeout}, nil
}

// checkSocketAddr accepts what sd_notify accepts: "" (disabled), an absolute
// path or an abstract name, within sockaddr_un's 108 bytes.
func checkSocketAddr(addr string) error {
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("%w: %q must be an absolute path or start with '@'", ErrInvalidSocket, addr)
	}
	if len(addr) > 107 || len(addr) < 2 {
		return fmt.Errorf("%w: %q must be 2 to 107 bytes long", ErrInvalidSocket, addr)
	}
	return nil
}

// Notify sends one notification made of lines (KEY=VALUE assignments such
// as NotifyReady or Status("serving")) in a single datagram, which systemd
// processes atomically: Notify(MainPID(pid), NotifyReady) moves the main PID
// and reports ready in one step.
//
// It returns (false, nil) when the Notifier is disabled and (true, nil) once
// the datagram is sent. Sent does not mean accepted: systemd ignores, and
// logs, a message from a process NotifyAccess= does not allow.
func (n *Notifier) Notify(lines ...string) (bool, error) {
	return n.NotifyWithFDs(nil, lines...)
}

// NotifyWithFDs is Notify with descriptors attached (SCM_RIGHTS). systemd
// keeps them only in a message with FDSTORE=1 and closes them otherwise; see
// StoreFDs.
func (n *Notifier) NotifyWithFDs(fds []int, lines ...string) (bool, error) {
	msg, err := encode(lines)
	if err != nil {
		return false, err
	}
	if len(fds) > MaxMessageFDs {
		return false, fmt.Errorf("%w: %d descriptors, at most %d fit in one message", ErrInvalidMessage, len(fds), MaxMessageFDs)
	}
	if !n.Enabled() {
		return false, nil
	}
	if err := sendNotify(n.socket, msg, fds, n.timeout); err != nil {
		return false, fmt.Errorf("systemd: notify %s: %w", summary(lines), err)
	}
	return true, nil
}

// summary names a message in errors by its keys, not its values (a STATUS=
// can be long).
func summary(lines []string) string {
	keys := make([]string, len(lines))
	for i, l := range lines {
		keys[i], _, _ = strings.Cut(l, "=")
	}
	return strings.Join(keys, ",")
}

// Enabled reports whether the process runs under a service manager that
// listens for notifications.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Socket returns the notification socket address, "" when disabled.
func (n *Notifier) Socket() string {
	if n == nil {
		return ""
	}
	return n.socket
}

// Ready sends READY=1: start-up is finished (Type=notify), or a reload
// announced with Reloading is.
func (n *Notifier) Ready() (bool, error) { return n.Notify(NotifyReady) }

// Reloading sends RELOADING=1 with MONOTONIC_USEC=now: the service is
// reloading its configuration and will send READY=1 when done.
func (n *Notifier) Reloading() (bool, error) {
	ts, err := MonotonicUSec()
	if err != nil {
		return false, fmt.Errorf("systemd: notify RELOADING: %w", err)
	}
	return n.Notify(NotifyReloading, ts)
}

// Stopping sends STOPPING=1: the service is shutting down.
func (n *Notifier) Stopping() (bool, error) { return n.Notify(NotifyStopping) }

// Status sends STATUS=text.
func (n *Notifier) Status(text string) (bool, error) { return n.Notify(Status(text)) }

// MainPID sends MAINPID=pid: pid is now the service's main process. Whether
// systemd accepts it depends on who sends it and on NotifyAccess=; see the
// package documentation.
func (n *Notifier) MainPID(pid int) (bool, error) {
	if pid <= 0 {
		return false, fmt.Errorf("%w: MAINPID must be positive, got %d", ErrInvalidMessage, pid)
	}
	return n.Notify(MainPID(pid))
}

// Errno sends ERRNO=errno, the reason of a failure.
func (n *Notifier) Errno(errno syscall.Errno) (bool, error) { return n.Notify(Errno(errno)) }

// ExtendTimeout sends EXTEND_TIMEOUT_USEC: the current start, reload or stop
// needs d more time. To keep extending, send again before d runs out.
func (n *Notifier) ExtendTimeout(d time.Duration) (bool, error) {
	if d <= 0 {
		return false, fmt.Errorf("%w: EXTEND_TIMEOUT_USEC must be positive, got %v", ErrInvalidMessage, d)
	}
	return n.Notify(ExtendTimeout(d))
}

// Watchdog sends WATCHDOG=1, the keep-alive ping WatchdogSec= asks for. See
// Watchdog.Run for a loop that sends it.
func (n *Notifier) Watchdog() (bool, error) { return n.Notify(NotifyWatchdog) }

// StoreFDs hands the descriptors of conns (an *os.File, *net.TCPListener,
// *net.UnixListener, *net.UDPConn, …) to systemd's file descriptor store
// under name (FDSTORE=1, FDNAME=name, SCM_RIGHTS). systemd keeps them across
// restarts of the service (not across stop/start) and passes them back at
// the next start through LISTEN_FDS/LISTEN_FDNAMES (see Files). The unit
// needs FileDescriptorStoreMax= high enough, or systemd closes them.
//
// The descriptors are read with SyscallConn().Control, never with
// (*os.File).Fd(), which would switch them, and every duplicate sharing their
// open file description, to blocking mode. The caller keeps its own copies.
func (n *Notifier) StoreFDs(name string, conns ...syscall.Conn) (bool, error) {
	if err := validFDName(name); err != nil {
		return false, err
	}
	if len(conns) == 0 {
		return false, fmt.Errorf("%w: FDSTORE=1 without descriptors", ErrInvalidMessage)
	}
	var (
		sent bool
		err  error
	)
	// Each Control keeps its descriptor from being closed until the
	// innermost call, which sends them all, returns.
	cerr := withRawFDs(conns, nil, func(fds []int) {
		sent, err = n.NotifyWithFDs(fds, NotifyFDStore, FDName(name))
	})
	if cerr != nil {
		return false, fmt.Errorf("systemd: FDSTORE %s: %w", name, cerr)
	}
	return sent, err
}

// RemoveFDs asks systemd to close and forget every stored descriptor named
// name (FDSTOREREMOVE=1, FDNAME=name).
func (n *Notifier) RemoveFDs(name string) (bool, error) {
	if err := validFDName(name); err != nil {
		return false, err
	}
	return n.Notify(NotifyFDStoreRemove, FDName(name))
}

// Barrier sends BARRIER=1 with the write end of a pipe and waits until the
// service manager has closed it, which it does after processing every
// notification this process sent before (sd_notify_barrier(3)). Use it to
// know that, say, a MAINPID= took effect before the sender exits. systemd
// handles BARRIER=1 ahead of NotifyAccess=, so any process may send it.
//
// ctx bounds the wait (give it a deadline: a manager that never answers
// would block forever); its error is returned, wrapped, when it ends first.
// Not under systemd, Barrier returns (false, nil) at once.
func (n *Notifier) Barrier(ctx context.Context) (bool, error) {
	if !n.Enabled() {
		return false, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return false, fmt.Errorf("systemd: BARRIER: %w", err)
	}
	defer r.Close()
	var sendErr error
	err = withRawFDs([]syscall.Conn{w}, nil, func(fds []int) {
		_, sendErr = n.NotifyWithFDs(fds, NotifyBarrier)
	})
	// from now on only the manager's copy keeps the pipe open
	w.Close()
	if err != nil {
		return false, fmt.Errorf("systemd: BARRIER: %w", err)
	}
	if sendErr != nil {
		return false, sendErr
	}
	// a deadline in the past makes the pending Read return at once
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	for {
		_, err := r.Read(b[:])
		switch {
		case errors.Is(err, io.EOF):
			return true, nil
		case ctx.Err() != nil:
			return true, fmt.Errorf("systemd: BARRIER: %w", ctx.Err())
		case err != nil:
			return true, fmt.Errorf("systemd: BARRIER: %w", err)
		}
	}
}

// withRawFDs calls f with the raw descriptors of conns, each held by its
// RawConn.Control for the duration of the call.
func withRawFDs(conns []syscall.Conn, fds []int, f func([]int)) error {
	if len(conns) == 0 {
		f(fds)
		return nil
	}
	rc, err := conns[0].SyscallConn()
	if err != nil {
		return err
	}
	var inner error
	err = rc.Control(func(fd uintptr) {
		inner = withRawFDs(conns[1:], append(fds, int(fd)), f)
	})
	if err != nil {
		return err
	}
	return inner
}

// Notify sends lines to $NOTIFY_SOCKET, like sd_notify(0, …): (false, nil)
// when the process does not run under systemd. For repeated use, keep a
// Notifier.
func Notify(lines ...string) (bool, error) {
	n, err := NewNotifier(NotifierOptions{})
	if err != nil {
		return false, err
	}
	return n.Notify(lines...)
}
