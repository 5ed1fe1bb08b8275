package sdupgrade

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/procfd"
	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/upgrader"
)

// DefaultHandoverTimeout bounds the old process's wait for systemd to have
// processed MAINPID= (BARRIER=1) at an upgrade. The new process waits up to
// twice as long for the old one's word before it claims the main PID itself.
const DefaultHandoverTimeout = 10 * time.Second

// handoverFileName names the pipe, passed to the new process with its
// listeners, on which the old process says "you are the main process now".
const handoverFileName = "baton.systemd.handover"

// handoverDone is the byte the old process writes once systemd has taken in
// MAINPID=<new>. Anything else, or EOF, means it could not hand over.
const handoverDone = '1'

// FDStoreMode says whether an Integration puts the service's listening
// sockets into systemd's file descriptor store.
type FDStoreMode int

const (
	// FDStoreAuto stores them when $FDSTORE (systemd.EnvFDStore) is a
	// positive number: systemd 254 and later set it to the unit's
	// FileDescriptorStoreMax=. On systemd 252 and 253 the unit says it
	// itself with Environment=FDSTORE=N, N equal to FileDescriptorStoreMax=.
	FDStoreAuto FDStoreMode = iota
	// FDStoreOn stores them whenever the process runs under systemd. The
	// unit must have FileDescriptorStoreMax= high enough, or systemd logs
	// a warning and closes them.
	FDStoreOn
	// FDStoreOff never stores them.
	FDStoreOff
)

// AttachOptions configure Attach. The zero value notifies $NOTIFY_SOCKET and
// uses the fd store when $FDSTORE asks for it.
type AttachOptions struct {
	// Notifier talks to systemd. Nil means
	// systemd.NewNotifier(systemd.NotifierOptions{}), which keeps
	// NOTIFY_SOCKET in the environment for the next generation.
	Notifier *systemd.Notifier

	// FDStore says whether the listening TCP sockets go into systemd's fd
	// store once the process is ready, so that a crash or "systemctl
	// restart" keeps them, and the connections queued on them. The zero
	// value is FDStoreAuto.
	FDStore FDStoreMode

	// HandoverTimeout bounds the old process's wait for systemd at the
	// handover. Zero means DefaultHandoverTimeout.
	HandoverTimeout time.Duration

	// Logger receives a line for each systemd step. Nil discards.
	Logger *slog.Logger
}

// host is the part of *upgrader.Upgrader an Integration uses: the seam
// through which unit tests drive it without starting processes.
type host interface {
	OnEvent(func(upgrader.Event))
	AdoptListener(name string, ln net.Listener) error
	AddFile(name string, f *os.File) error
	File(name string) (*os.File, error)
	HasParent() bool
	Generation() int
	Listeners() []upgrader.ListenerInfo
}

// role is where this process stands towards systemd.
type role int

const (
	roleStarting   role = iota // not ready, or waiting for the handover
	roleMain                   // the unit's main process
	roleHandedOver             // MAINPID= names the successor
	roleStopping               // STOPPING=1 sent
)

// Integration tells systemd what an upgrader.Upgrader does, so that a
// Type=notify unit follows every upgrade: the unit stays active, MainPID
// names the process that serves, and "systemctl reload" can run the upgrade.
// Create it with Attach.
//
// Its invariant: at any time at most one process of the service speaks to
// systemd as its main process, and it is the one systemd believes is. The old
// process stops its watchdog pings before it sends MAINPID=<new>; the new
// process sends nothing until the old one has seen systemd take that in.
type Integration struct {
	u         host
	n         *systemd.Notifier
	log       *slog.Logger
	timeout   time.Duration
	fdStore   bool
	pid       int
	gen       int
	hasParent bool
	// names maps the inode of each activated socket to the name systemd
	// gave it, which is the name it goes into the fd store under.
	names map[uint64]string

	mainC      chan struct{}      // closed when this process becomes the main one
	gone       context.Context    // done when it no longer is, or at Close
	goneCancel context.CancelFunc // cancels gone
	pinging    sync.WaitGroup     // RunWatchdog calls inside Watchdog.Run
	wg         sync.WaitGroup     // the handover waiter

	// mu serialises the event handlers, the handover waiter and Close, and
	// with them every message the integration sends: RELOADING=1 cannot
	// overtake the READY=1 it follows.
	mu        sync.Mutex
	role      role
	closed    bool
	handoverW *os.File // old process: the current attempt's write end
	handoverR *os.File // new process: the read end, until ready
	waiting   *os.File // new process: the read end the waiter reads
}

// Attach connects u to systemd. Call it right after upgrader.New, before the
// first Listen:
//
//   - In a process that was not started by an upgrade it takes the sockets
//     systemd passed (socket activation, the fd store; see systemd.Files)
//     and offers each listening stream socket to u.AdoptListener under the
//     name systemd gave it (FileDescriptorName=, FDNAME=), or under its address when it
//     has none, so that u.Listen("tcp", "http") or u.Listen("tcp",
//     "127.0.0.1:8080") takes it. Other descriptors are closed with a
//     warning: baton hands on listeners only. A malformed LISTEN_*
//     environment is an error (wrapping systemd.ErrInvalidActivation).
//   - It follows u's events (upgrader.Upgrader.OnEvent) and sends, when the
//     process runs under systemd: READY=1 and STATUS= once the process is
//     ready (after the handover, in a new generation), then FDSTORE=1 for
//     each listening TCP socket if the fd store is on; RELOADING=1 with
//     MONOTONIC_USEC= when an upgrade starts; MAINPID=<new> and BARRIER=1
//     when the new process is ready, before Upgrade returns (the new process
//     hears of it on a pipe handed over with the listeners, and only then
//     sends its READY=1); READY=1 with "STATUS=upgrade failed: …" when the
//     upgrade failed, which ends the reload with the old process still the
//     main one; STOPPING=1 when a graceful stop begins. The package
//     documentation lists the messages and why NotifyAccess=main suffices.
//
// Not running under systemd is normal: the Integration then only adopts
// activated sockets (systemd-socket-activate sets no NOTIFY_SOCKET). Stop it
// with Close.
func Attach(u *upgrader.Upgrader, opts AttachOptions) (*Integration, error) {
	return attach(u, opts)
}

func attach(u host, opts AttachOptions) (*Integration, error) {
	n := opts.Notifier
	if n == nil {
		var err error
		if n, err = systemd.NewNotifier(systemd.NotifierOptions{}); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.HandoverTimeout
	if timeout <= 0 {
		timeout = DefaultHandoverTimeout
	}
	i := &Integration{
		u:         u,
		n:         n,
		log:       log,
		timeout:   timeout,
		pid:       os.Getpid(),
		gen:       u.Generation(),
		hasParent: u.HasParent(),
		names:     make(map[uint64]string),
		mainC:     make(chan struct{}),
	}
	i.gone, i.goneCancel = context.WithCancel(context.Background())
	i.fdStore = n.Enabled() && i.wantFDStore(opts.FDStore)

	if !i.hasParent {
		// A process started by an upgrade gets its sockets from its
		// parent; LISTEN_* were removed by the first generation.
		if err := i.adoptActivated(); err != nil {
			i.goneCancel()
			return nil, err
		}
	} else if n.Enabled() {
		f, err := u.File(handoverFileName)
		if err == nil && f != nil {
			i.handoverR, err = pollable(f)
		}
		if err != nil {
			log.Warn("systemd: handover pipe from the previous generation unusable", "err", err)
		}
	}
	u.OnEvent(i.handle)
	return i, nil
}

func (i *Integration) wantFDStore(mode FDStoreMode) bool {
	switch mode {
	case FDStoreOn:
		return true
	case FDStoreOff:
		return false
	}
	s, ok := os.LookupEnv(systemd.EnvFDStore)
	if !ok {
		return false
	}
	max, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		i.log.Warn("systemd: ignoring malformed "+systemd.EnvFDStore, "value", s)
		return false
	}
	return max > 0
}

// adoptActivated offers every activated listening stream socket to the
// upgrader, once per socket: with a .socket unit and the fd store both
// holding it, systemd passes the same socket twice.
func (i *Integration) adoptActivated() error {
	files, err := systemd.Files(systemd.ActivationOptions{})
	if err != nil {
		return err
	}
	seen := make(map[uint64]bool, len(files))
	for k, f := range files {
		ino, inoErr := procfd.Inode(f.File)
		ln, err := f.Listener()
		if err != nil {
			i.log.Warn("systemd: closed an activated descriptor that is not a listening stream socket "+
				"(baton hands on listeners only)", "name", f.Name, "err", err)
			f.File.Close()
			continue
		}
		if inoErr == nil && seen[ino] {
			ln.Close()
			i.log.Info("systemd: dropped a second descriptor of an activated socket", "name", f.Name)
			continue
		}
		seen[ino] = inoErr == nil
		name := f.Name
		if name == systemd.DefaultFDName {
			name = ln.Addr().String()
		} else if inoErr == nil {
			i.names[ino] = name
		}
		if err := i.u.AdoptListener(name, ln); err != nil {
			ln.Close()
			for _, rest := range files[k+1:] {
				rest.File.Close()
			}
			return fmt.Errorf("systemd: adopt activated socket %s: %w", name, err)
		}
		i.log.Info("systemd: adopted activated listener", "name", name, "addr", ln.Addr().String())
	}
	return nil
}

// Enabled reports whether the process runs under systemd ($NOTIFY_SOCKET).
func (i *Integration) Enabled() bool { return i.n.Enabled() }

// Main returns a channel that is closed once this process is the service's
// main process and has sent READY=1: at ready in the first generation, after
// the handover in a later one. Not under systemd, it is closed at ready.
func (i *Integration) Main() <-chan struct{} { return i.mainC }

// RunWatchdog runs w.Run while this process is the service's main process:
// from Main until it hands the service over, starts a graceful stop, Close is
// called or ctx is done. Before the handover systemd would refuse the new
// process's pings, after it the old one's. It blocks: call it on a goroutine
// you own. w's Check must return when its context is done, since the
// handover waits for the ping in flight.
func (i *Integration) RunWatchdog(ctx context.Context, w *systemd.Watchdog) {
	select {
	case <-i.mainC:
	case <-i.gone.Done():
		return
	case <-ctx.Done():
		return
	}
	// The handlers end pinging under mu before the handover: count this
	// Run in, or see that it must not start.
	i.mu.Lock()
	if i.gone.Err() != nil {
		i.mu.Unlock()
		return
	}
	i.pinging.Add(1)
	i.mu.Unlock()
	defer i.pinging.Done()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(i.gone, cancel)
	defer stop()
	w.Run(wctx)
}

// Close detaches the integration: it sends nothing more, stops RunWatchdog
// and the wait for a handover, and closes the handover pipe. It does not
// close the adopted listeners, which belong to the upgrader. Close is
// idempotent.
func (i *Integration) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.goneCancel()
	for _, f := range []*os.File{i.handoverW, i.handoverR} {
		if f != nil {
			f.Close()
		}
	}
	i.handoverW, i.handoverR = nil, nil
	if i.waiting != nil {
		// a deadline in the past makes the waiter's Read return at once
		i.waiting.SetReadDeadline(time.Unix(1, 0))
	}
	i.mu.Unlock()
	i.wg.Wait()
	return nil
}
