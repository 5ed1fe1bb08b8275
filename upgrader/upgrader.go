package upgrader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/cloudflare/tableflip"
)

// flipper is the part of *tableflip.Upgrader that Upgrader uses: the seam
// through which unit tests drive the lifecycle without starting processes.
type flipper interface {
	Listener(network, addr string) (net.Listener, error)
	Listen(network, addr string) (net.Listener, error)
	PacketConn(network, addr string) (net.PacketConn, error)
	ListenPacket(network, addr string) (net.PacketConn, error)
	File(name string) (*os.File, error)
	AddFile(name string, f *os.File) error
	AddListener(network, addr string, ln tableflip.Listener) error
	Ready() error
	Upgrade() error
	Stop()
	HasParent() bool
	WaitForParent(ctx context.Context) error
}

// Result describes a successful upgrade.
type Result struct {
	// Pid is the new process's pid.
	Pid int
	// Generation is the new process's generation.
	Generation int
	// Duration is the time from the trigger to the new process being ready.
	Duration time.Duration
	// StateBytes is the size of the snapshot handed over.
	StateBytes int64
}

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

// Upgrader upgrades the process it runs in. Create one with New, take every
// listener through it, call Ready once the service is up, and call Upgrade
// on each trigger. When Exit is closed a new process has taken over: call
// Shutdown to drain and then exit.
//
// An Upgrader is safe for concurrent use. Only one may exist per process.
type Upgrader struct {
	opts    Options
	log     *slog.Logger
	tf      flipper
	metrics *metrics
	gen     int
	// parentPid is the previous generation's pid, 0 if none.
	parentPid int
	// startAttempt is the parent's attempt that started this process, and
	// startID the id of that upgrade in the logs.
	startAttempt int
	startID      string

	parent handoffConn // to the previous generation; nil UnixConn if none
	own    handoffConn // to the next generation, across attempts
	// handoffErr says why a process started by a baton upgrade has no
	// parent connection; Restore returns it.
	handoffErr error

	exitC      chan struct{} // closed when a new process took over
	parentGone chan struct{} // closed when the previous generation exited
	stopWatch  context.CancelFunc
	wg         sync.WaitGroup // serve loops and the parent watcher

	reg      *state.Registry
	counters *Counters
	history  *history
	// stateMu serialises freezing the registry between an upgrade and the
	// periodic state file write.
	stateMu     sync.Mutex
	restoreOnce sync.Once
	restoreInfo state.Info
	restoreErr  error
	restored    atomic.Bool
	control     net.Listener  // the control socket, if Options.ControlSocket
	stopPeriod  chan struct{} // closed by markClosed: stops the periodic state file write
	readyC      chan struct{} // closed by Ready: a new process's servers start accepting
	readyOnce   sync.Once

	mu          sync.Mutex
	ready       bool
	upgrading   bool
	upgradeDone chan struct{} // closed when the upgrade in progress ends
	upgraded    bool
	closed      bool
	attempt     int
	statusFuncs map[string]func() any
	started     time.Time
	drained     chan struct{} // closed when Shutdown has drained
	adopted     []adopted
	eventHooks  []func(Event)
	closers     []io.Closer
	infos       []ListenerInfo
	servers     []*httpServer
	hooks       []func(context.Context) error
}

// New creates the process's Upgrader. In a process started by an upgrade it
// takes the handoff socket from the previous generation and says hello.
func New(opts Options) (*Upgrader, error) {
	tf, err := tableflip.New(tableflip.Options{
		UpgradeTimeout: opts.UpgradeTimeout,
		PIDFile:        opts.PIDFile,
		ListenConfig:   opts.ListenConfig,
	})
	if err != nil {
		return nil, err
	}
	u, err := newUpgrader(tf, opts, os.Getenv(envHandoff))
	if err != nil {
		tf.Stop()
		return nil, err
	}
	return u, nil
}

func newUpgrader(tf flipper, opts Options, env string) (*Upgrader, error) {
	opts.setDefaults()
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	// The variable describes this process's start only; children get
	// their own, set before each attempt.
	os.Unsetenv(envHandoff)

	reg := opts.State
	if reg == nil {
		if reg, err = state.NewRegistry(state.Options{}); err != nil {
			return nil, err
		}
	}
	counters, hist := newCounters(), &history{}
	if err := reg.Register(counters.participant()); err != nil {
		return nil, fmt.Errorf("register counters: %w", err)
	}
	if err := reg.Register(hist.participant()); err != nil {
		return nil, fmt.Errorf("register history: %w", err)
	}
	u := &Upgrader{
		opts:       opts,
		log:        opts.Logger.With("pid", os.Getpid()),
		tf:         tf,
		metrics:    m,
		reg:        reg,
		counters:   counters,
		history:    hist,
		exitC:      make(chan struct{}),
		parentGone: make(chan struct{}),
		stopPeriod: make(chan struct{}),
		readyC:     make(chan struct{}),
		drained:    make(chan struct{}),
		started:    time.Now(),
	}
	if m != nil {
		m.counters = counters
	}
	counters.onRestore = func() { fault(faultNewRestoring, u.gen, u.startAttempt) }
	if tf.HasParent() {
		u.adoptParent(env)
		ctx, cancel := context.WithCancel(context.Background())
		u.stopWatch = cancel
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			if err := tf.WaitForParent(ctx); err == nil || !errors.Is(err, context.Canceled) {
				close(u.parentGone)
			}
		}()
	} else {
		close(u.parentGone)
	}
	u.log = u.log.With("generation", u.gen)
	if m != nil {
		m.generation.Set(float64(u.gen))
	}

	parentEnd, childEnd, err := newSocketPair()
	if err != nil {
		u.Close()
		return nil, err
	}
	err = tf.AddFile(handoffFileName+strconv.Itoa(u.gen+1), childEnd)
	childEnd.Close()
	if err != nil {
		parentEnd.Close()
		u.Close()
		return nil, fmt.Errorf("register handoff socket: %w", err)
	}
	if u.own, err = fileConn(parentEnd); err != nil {
		u.Close()
		return nil, fmt.Errorf("handoff socket: %w", err)
	}
	if opts.ControlSocket != "" {
		if u.control, err = u.listenControl(opts.ControlSocket); err != nil {
			u.Close()
			return nil, err
		}
	}
	return u, nil
}

// adoptParent reads BATON_HANDOFF, takes the handoff socket and says hello.
// A process started by an upgrade without the variable has a parent that is
// not baton: it starts with no state to receive. One whose variable or
// socket is unusable (broken, bound to another process, naming a socket it
// did not inherit) cannot receive the state its parent holds: handoffErr
// makes Restore, and so Ready, fail, and the parent keeps its state.
func (u *Upgrader) adoptParent(env string) {
	u.gen = 1
	if env == "" {
		u.log.Warn("started by an upgrade without " + envHandoff + ": the previous generation hands over no state")
		return
	}
	h, err := parseHandoffEnv(env)
	if err != nil {
		u.handoffErr = err
		u.log.Warn("started by an upgrade without a usable handoff", "err", err)
		return
	}
	if h.ParentPid != os.Getppid() {
		u.handoffErr = fmt.Errorf("%w: %s=%q is meant for a child of pid %d, and this process's parent is %d",
			ErrHandshake, envHandoff, env, h.ParentPid, os.Getppid())
		u.log.Warn("started by an upgrade without a usable handoff", "err", u.handoffErr)
		return
	}
	u.gen, u.parentPid, u.startAttempt = h.Generation, h.ParentPid, h.Attempt
	u.startID = fmt.Sprintf("%d-%d", h.ParentPid, h.Attempt)
	fault(faultNewStart, u.gen, u.startAttempt)
	name := handoffFileName + strconv.Itoa(h.Generation)
	f, err := u.tf.File(name)
	if err != nil || f == nil {
		u.handoffErr = fmt.Errorf("%w: handoff socket %s not inherited", ErrHandshake, name)
		if err != nil {
			u.handoffErr = fmt.Errorf("%w: handoff socket %s: %v", ErrHandshake, name, err)
		}
		u.log.Warn("handoff socket not inherited", "err", u.handoffErr)
		return
	}
	c, err := fileConn(f)
	if err != nil {
		u.handoffErr = fmt.Errorf("%w: handoff socket %s unusable: %v", ErrHandshake, name, err)
		u.log.Warn("handoff socket unusable", "err", u.handoffErr)
		return
	}
	if err := c.send(message{Type: msgHello, Pid: os.Getpid(), Attempt: h.Attempt}, nil); err != nil {
		u.handoffErr = fmt.Errorf("%w: hello: %v", ErrHandshake, err)
		u.log.Warn("handoff hello failed", "err", u.handoffErr)
		c.Close()
		return
	}
	u.parent = c
}

// Generation returns the process's generation: 0 for a process that was
// not started by an upgrade, one more than its parent's otherwise.
func (u *Upgrader) Generation() int { return u.gen }

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Exit returns a channel that is closed when a new process has taken over.
// The caller should then call Shutdown and exit.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// Listen returns the listener for network and addr that the previous
// generation handed over, or creates it. Use it for every listener: one
// opened elsewhere is not handed on, and the new process then fails with
// "address already in use". The listener is closed when Shutdown starts.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	ln, err := u.tf.Listener(network, addr)
	inherited := ln != nil
	if err == nil && ln == nil {
		if ln = u.takeAdopted(network, addr); ln != nil {
			inherited = true
			err = u.tf.AddListener(network, addr, ln.(tableflip.Listener))
		}
	}
	if err == nil && ln == nil {
		ln, err = u.tf.Listen(network, addr)
	}
	if err != nil {
		return nil, u.listenError(network, addr, err)
	}
	u.addCloser(ln, ListenerInfo{Kind: "listener", Network: network, Addr: addr, Inherited: inherited})
	return ln, nil
}

// ListenPacket is Listen for packet sockets (udp, unixgram).
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := u.tf.PacketConn(network, addr)
	inherited := pc != nil
	if err == nil && pc == nil {
		pc, err = u.tf.ListenPacket(network, addr)
	}
	if err != nil {
		return nil, u.listenError(network, addr, err)
	}
	u.addCloser(pc, ListenerInfo{Kind: "packet", Network: network, Addr: addr, Inherited: inherited})
	return pc, nil
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

// Serve serves srv on ln, which should come from Listen, in a goroutine the
// Upgrader owns, and drains it on Shutdown without dropping a request. It
// wraps srv.Handler and srv.ConnState (the originals are still called), so
// call it before srv serves anything, and do not call srv.Shutdown yourself.
// In a process started by an upgrade, srv accepts connections only once
// Ready has succeeded; until then the previous generation accepts them.
func (u *Upgrader) Serve(srv *http.Server, ln net.Listener) {
	s := newHTTPServer(srv, ln, u.opts.IdleGrace)
	gate := u.tf.HasParent()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.servers = append(u.servers, s)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if gate {
			// Until it is ready the upgrade may still fail and this
			// process be killed (it hangs, or is stopped): every
			// request it had taken, and what the request changed,
			// would go with it, while the previous generation, which
			// accepts on the same sockets until then, would have
			// served it and kept the effect.
			select {
			case <-u.readyC:
			case <-u.stopPeriod: // closed: serve returns at once
			}
		}
		s.serve()
		if s.serveErr != nil {
			u.log.Error("http server stopped", "addr", ln.Addr().String(), "err", s.serveErr)
		}
	}()
}

// OnShutdown registers a drain hook for a server that is not an
// *http.Server. Shutdown calls it with its context after the listeners are
// closed; it should finish the work in flight and return, or return
// ctx.Err() at the deadline.
func (u *Upgrader) OnShutdown(f func(ctx context.Context) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hooks = append(u.hooks, f)
}

// Ready reports that the process has started: its listeners are open and its
// state restored (Ready calls Restore if the caller has not). In a process
// started by an upgrade this completes the upgrade: the PID file names this
// process, and the old one starts to drain. If Restore failed, Ready returns
// its error and reports nothing: the process should exit. Ready is
// idempotent.
func (u *Upgrader) Ready() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return ErrClosed
	}
	already := u.ready
	u.mu.Unlock()
	if already {
		return nil
	}
	if _, err := u.Restore(context.Background()); err != nil {
		return err
	}
	fault(faultNewHang, u.gen, u.startAttempt)
	if err := u.tf.Ready(); err != nil {
		// The previous generation died after handing over (it froze its
		// participants for good when it sent the snapshot, so what this
		// process restored is complete). Nobody else serves: carry on.
		// A parent that died mid-transfer made Restore fail instead.
		if !u.tf.HasParent() || !u.parentDied() {
			return err
		}
		u.log.Warn("previous generation died before the handover completed: this process carries on with the state it received", "err", err)
	}
	fault(faultNewCrashLate, u.gen, u.startAttempt)
	u.mu.Lock()
	u.ready = true
	u.mu.Unlock()
	u.readyOnce.Do(func() { close(u.readyC) })
	if u.tf.HasParent() {
		// The new process counts the upgrade that made it: the old one
		// may be gone before a scrape could see it there.
		u.counters.Counter(counterUpgradeSuccess).Inc()
		u.history.completePending(os.Getpid(), time.Now())
	}
	if p := u.parent; p.UnixConn != nil {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.awaitFinal(p)
		}()
	}
	if u.control != nil {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.serveControl(u.control)
		}()
	}
	if u.opts.StateFile != "" && u.opts.StateFileInterval > 0 {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.statePeriodically(u.opts.StateFileInterval, u.stopPeriod)
		}()
	}
	for _, name := range u.closeUnadopted() {
		u.log.Warn("closed a socket-activated listener no Listen call asked for", "listener", name)
	}
	u.warnStrayListeners()
	if u.startID != "" {
		u.log.Info("ready", "listeners", len(u.Listeners()), "upgrade", u.startID)
	} else {
		u.log.Info("ready", "listeners", len(u.Listeners()))
	}
	u.emit(Event{Step: StepReady, Pid: os.Getpid()})
	return nil
}

// State returns the registry of participants whose state moves to the new
// process. Register participants before Restore or Ready.
func (u *Upgrader) State() *state.Registry { return u.reg }

// Counters returns the counters that survive upgrades.
func (u *Upgrader) Counters() *Counters { return u.counters }

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

// Upgrade starts the binary now at the process's own path, hands it the
// listeners, and waits until it is ready or has failed. Only one upgrade
// runs at a time. On success the Exit channel is closed and the caller
// should Shutdown; on failure nothing has changed hands and the error, an
// *UpgradeError or one of ErrNotReady, ErrUpgradeInProgress, ErrUpgraded,
// ErrParentRunning and ErrClosed, says why. Cancelling ctx kills the new
// process and fails the upgrade.
func (u *Upgrader) Upgrade(ctx context.Context) (Result, error) {
	return u.upgradeWithEvents(ctx, nil)
}

// OnEvent registers f to be called with every step of the process's life
// that others may need to tell the world about: "ready", each step of an
// upgrade ("started", "child-started", "state-sent", "child-ready",
// "failed"), and "draining" or "stopping" when Shutdown starts. The systemd
// integration uses it. f must not block.
func (u *Upgrader) OnEvent(f func(Event)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.eventHooks = append(u.eventHooks, f)
}

func (u *Upgrader) emit(e Event) {
	u.mu.Lock()
	hooks := append([]func(Event){}, u.eventHooks...)
	u.mu.Unlock()
	for _, f := range hooks {
		f(e)
	}
}

// upgradeWithEvents is Upgrade, reporting each step to events if not nil.
func (u *Upgrader) upgradeWithEvents(ctx context.Context, perCall func(Event)) (Result, error) {
	events := func(e Event) {
		u.emit(e)
		if perCall != nil {
			perCall(e)
		}
	}
	attempt, err := u.beginUpgrade()
	if err != nil {
		return Result{}, err
	}
	started := time.Now()
	id := fmt.Sprintf("%d-%d", os.Getpid(), attempt)
	u.history.setPending(&Record{ID: id, Started: started, FromPid: os.Getpid(), Generation: u.gen})
	events(Event{Step: StepStarted})
	res, err := u.upgrade(ctx, attempt, id, events)
	u.history.setPending(nil)
	if err != nil {
		rec := Record{ID: id, Started: started, Duration: time.Since(started), Result: resultFailure,
			Reason: err.Error(), FromPid: os.Getpid(), Generation: u.gen}
		var ue *UpgradeError
		if errors.As(err, &ue) {
			rec.Step, rec.ToPid = ue.Step, ue.Pid
		}
		u.history.add(rec)
		events(Event{Step: StepFailed, Error: err.Error()})
	} else {
		events(Event{Step: StepChildReady, Pid: res.Pid})
	}

	u.mu.Lock()
	u.upgrading = false
	close(u.upgradeDone)
	if err == nil {
		u.upgraded = true
		close(u.exitC)
	}
	u.mu.Unlock()
	if err != nil {
		// tableflip v1.2.3 does not close its copies of the pipe ends it
		// passed to a child; they are *os.Files, closed by their
		// finalizers. A collection now keeps a run of failed attempts
		// from holding two fds each until the next GC.
		runtime.GC()
		u.counters.Counter(counterUpgradeFailure).Inc()
		var ue *UpgradeError
		if errors.As(err, &ue) {
			u.counters.Counter(counterFailureStep + ue.Step).Inc()
		}
	} else if u.metrics != nil {
		u.metrics.duration.Observe(res.Duration.Seconds())
	}
	return res, err
}

func (u *Upgrader) beginUpgrade() (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.closed:
		return 0, ErrClosed
	case u.upgraded:
		return 0, ErrUpgraded
	case u.upgrading:
		return 0, ErrUpgradeInProgress
	case !u.ready:
		return 0, ErrNotReady
	}
	if !u.parentExited() {
		return 0, ErrParentRunning
	}
	u.upgrading = true
	u.upgradeDone = make(chan struct{})
	u.attempt++
	return u.attempt, nil
}

// parentDied reports whether the previous generation is gone, waiting a
// moment for tableflip to notice.
func (u *Upgrader) parentDied() bool {
	select {
	case <-u.parentGone:
		return true
	case <-time.After(time.Second):
		return os.Getppid() != u.parentPid
	}
}

// parentExited reports whether the previous generation has exited.
// tableflip learns it from a pipe that closes when the parent's files are
// released, a moment before the process is reaped and this one reparented;
// a trigger sent right after the parent was seen gone waits for that moment
// rather than failing.
func (u *Upgrader) parentExited() bool {
	select {
	case <-u.parentGone:
		return true
	default:
	}
	if u.parentPid == 0 || os.Getppid() == u.parentPid {
		return false
	}
	select {
	case <-u.parentGone:
		return true
	case <-time.After(time.Second):
		return false
	}
}

func (u *Upgrader) upgrade(ctx context.Context, attempt int, id string, events func(Event)) (Result, error) {
	start := time.Now()
	log := u.log.With("upgrade", id)
	log.Info("upgrade started")
	fail := func(step string, pid int, err error, status string) (Result, error) {
		ue := &UpgradeError{Pid: pid, Step: step, Err: err, ExitStatus: status, Elapsed: time.Since(start)}
		log.Error("upgrade failed", "step", step, "child_pid", pid, "err", ue)
		return Result{}, ue
	}

	// tableflip resolves os.Args[0] when it starts the child; checking first
	// gives a clear error for a missing or non-executable file.
	if path, err := exec.LookPath(os.Args[0]); err != nil {
		return fail("start", 0, fmt.Errorf("%w: %v", ErrStartFailed, err), "")
	} else {
		log.Info("starting new process", "path", path)
	}
	u.warnStrayListeners()

	sctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
	defer cancel()
	s := &session{u: u, ctx: sctx, conn: u.own, attempt: attempt, log: log, events: events}
	s.drainStale()
	if err := u.own.SetReadDeadline(time.Time{}); err != nil {
		return fail("start", 0, fmt.Errorf("%w: %v", ErrStartFailed, err), "")
	}
	os.Setenv(envHandoff, handoffEnv{Version: handoffVersion, ParentPid: os.Getpid(), Generation: u.gen + 1, Attempt: attempt}.String())
	defer os.Unsetenv(envHandoff)

	flipped := make(chan error, 1)
	go func() { flipped <- u.tf.Upgrade() }()
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.serve()
	}()

	var err error
	select {
	case err = <-flipped:
	case <-ctx.Done():
		if pid := s.childPid(); pid > 0 {
			log.Warn("upgrade cancelled: killing new process", "child_pid", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		err = <-flipped
		if err != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
	}
	// Stop the session: any read in flight returns at once.
	u.own.SetReadDeadline(time.Unix(1, 0))
	<-served
	if err != nil {
		s.drainQueued()
	}

	pid, step := s.childPid(), s.step()
	s.mu.Lock()
	frozen, frozenAt, stateBytes := s.frozen, s.frozenAt, s.stateBytes
	s.mu.Unlock()
	if frozen {
		if err != nil {
			u.reg.Thaw()
			log.Info("participants thawed: carrying on", "frozen_for", time.Since(frozenAt))
		}
		if u.metrics != nil {
			u.metrics.handoffPause.Observe(time.Since(frozenAt).Seconds())
			u.metrics.stateBytes.Set(float64(stateBytes))
		}
	}
	if err != nil {
		if reason := s.rejected(); reason != "" {
			return fail(step, pid, fmt.Errorf("%w: %s", ErrStateRejected, reason), "")
		}
		reason, status := classify(err)
		if ctx.Err() != nil {
			reason = fmt.Errorf("%w: %w", ErrReadyTimeout, ctx.Err())
		}
		return fail(step, pid, reason, status)
	}
	res := Result{Pid: pid, Generation: u.gen + 1, Duration: time.Since(start), StateBytes: stateBytes}
	log.Info("upgrade succeeded: new process is ready", "child_pid", pid, "duration", res.Duration)
	return res, nil
}

// Shutdown stops the process gracefully: it closes every listener first, so
// that no connection is accepted that would not be served, then drains the
// HTTP servers and runs the OnShutdown hooks until they finish or ctx is
// done. A ctx without a deadline gets Options.DrainTimeout. Connections still
// open at the deadline are closed, logged and counted, and Shutdown returns
// ctx.Err(). After a successful upgrade the listeners live on in the new
// process; otherwise Unix socket files are removed.
func (u *Upgrader) Shutdown(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.opts.DrainTimeout)
		defer cancel()
	}
	start := time.Now()
	closers, servers, hooks, first := u.markClosed()
	if !first {
		return nil
	}
	if !u.isUpgraded() {
		u.abandonUpgrade(ctx)
	}
	if u.isUpgraded() {
		u.emit(Event{Step: StepDraining})
	} else {
		u.emit(Event{Step: StepStopping})
	}
	// Replies say "Connection: close" from now on, then the listeners
	// close: nothing is accepted that would not be served.
	for _, s := range servers {
		s.draining.Store(true)
	}
	for _, c := range closers {
		c.Close()
	}
	u.log.Info("draining", "servers", len(servers), "hooks", len(hooks))

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		forced int
	)
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, active, quiet, err := s.drain(ctx)
			mu.Lock()
			defer mu.Unlock()
			forced += f
			if quiet > 0 {
				u.log.Info("closed quiet idle connections", "addr", s.ln.Addr().String(), "connections", quiet)
			}
			if err != nil {
				u.log.Warn("drain deadline reached: closed connections", "addr", s.ln.Addr().String(),
					"connections", f, "with_request_in_flight", active)
				errs = append(errs, err)
			}
		}()
	}
	for _, h := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(u.drained)
	d := time.Since(start)
	u.counters.Counter(counterDrainForced).Add(uint64(forced))
	if u.metrics != nil {
		u.metrics.drainDuration.Observe(d.Seconds())
	}
	if u.isUpgraded() {
		u.sendFinal()
	} else if err := u.writeStateFile(ctx, false); err != nil {
		u.log.Error("state file not written", "err", err)
		errs = append(errs, err)
	}
	u.release()

	u.log.Info("drained", "duration", d, "forced_connections", forced)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.Join(errs...)
}

// abandonUpgrade ends an upgrade still in progress when the process stops
// without having handed over: tableflip kills the new process, and the
// upgrade thaws the participants before it returns. Without this the stop
// would try to freeze participants the upgrade holds frozen (the state file
// would not be written), and they would thaw after the stop had captured
// them; the new process, holding copies of the listeners but accepting
// nothing, would also outlive the drain. Once the upgrade has ended no other
// can start: markClosed refuses them.
func (u *Upgrader) abandonUpgrade(ctx context.Context) {
	u.mu.Lock()
	upgrading, done := u.upgrading, u.upgradeDone
	u.mu.Unlock()
	if !upgrading {
		return
	}
	u.log.Warn("stopping during an upgrade: abandoning it")
	u.tf.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Close stops the process at once: listeners and connections are closed
// without draining. It is idempotent and safe after Shutdown.
func (u *Upgrader) Close() error {
	closers, servers, _, first := u.markClosed()
	if !first {
		return nil
	}
	for _, c := range closers {
		c.Close()
	}
	for _, s := range servers {
		s.srv.Close()
	}
	u.release()
	return nil
}

func (u *Upgrader) markClosed() ([]io.Closer, []*httpServer, []func(context.Context) error, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, nil, nil, false
	}
	u.closed = true
	close(u.stopPeriod)
	return u.closers, u.servers, u.hooks, true
}

func (u *Upgrader) isUpgraded() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.upgraded
}

// release stops tableflip and joins every goroutine the Upgrader started.
func (u *Upgrader) release() {
	u.tf.Stop()
	if u.own.UnixConn != nil {
		// Read what the new process sent and no session read (its
		// "restored" may arrive after tableflip's ready byte ended the
		// session): a Unix socket closed with unread data resets its
		// peer, which then loses what is queued for it, such as the
		// final counts.
		u.own.discardQueued()
		u.own.Close()
	}
	if u.parent.UnixConn != nil {
		u.parent.Close()
	}
	if u.stopWatch != nil {
		u.stopWatch()
	}
	u.wg.Wait()
}
