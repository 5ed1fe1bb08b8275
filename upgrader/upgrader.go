package upgrader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/cloudflare/tableflip"
)

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
	// readyGate: the previous generation answers a ready request (see
	// askReady); askErr is its answer, asked once.
	readyGate bool
	askOnce   sync.Once
	askErr    error
	// probation is the previous generation's Options.Probation, from its
	// ready-go: this process serves on probation until the commit.
	probation time.Duration
	own       handoffConn // to the next generation, across attempts
	// handoffErr says why a process started by a baton upgrade has no
	// parent connection; Restore returns it.
	handoffErr error

	// pidFile is Options.PIDFile made absolute, removed at the stop if it
	// still names this process. pidPrepared delivers the file prepared for
	// it, once (pidfile.go).
	pidFile     string
	pidPrepared chan *os.File

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
	// upgradeTook is the successful upgrade's trigger-to-ready time,
	// sent to the new process with the final counts.
	upgradeTook time.Duration
	closed      bool
	// onProbation: in the old process, its upgrade's new process is on
	// probation; in the new one, this process is (until the commit).
	// Either refuses a trigger with ErrProbation.
	onProbation bool
	attempt     int
	statusFuncs map[string]func() any
	started     time.Time
	drained     chan struct{} // closed when Shutdown has drained
	adopted     []adopted
	eventHooks  []func(Event)
	// The Unix sockets: inherited and not yet taken, and this process's
	// (see unixsock.go); the next free index of each kind of name.
	unixIn, unixSocks     []*unixSock
	unixNext, unixExtNext int
	closers               []io.Closer
	infos                 []ListenerInfo
	servers               []*httpServer
	hooks                 []func(context.Context) error

	controlCommands map[string]ControlHandler // HandleControl (controlext.go); guarded by mu
}

// New creates the process's Upgrader. In a process started by an upgrade it
// reads BATON_HANDOFF, takes the handoff socket from the previous generation
// and says hello. It removes BATON_HANDOFF from the process's environment in
// any case (see Upgrade), so that no process this one starts inherits it.
// With Options.ControlSocket it takes the control socket; it serves from
// Ready on.
func New(opts Options) (*Upgrader, error) {
	// The upgrader writes the pid file itself (pidfile.go), not tableflip.
	tf, err := tableflip.New(tableflip.Options{
		UpgradeTimeout: tableflipTimeout(opts),
		ListenConfig:   opts.ListenConfig,
	})
	if err != nil {
		return nil, err
	}
	if tf.HasParent() {
		forgetTableflipParent()
	}
	u, err := newUpgrader(tf, opts, os.Getenv(envHandoff))
	if err != nil {
		tf.Stop()
		return nil, err
	}
	return u, nil
}

// tableflipEnv is the variable by which tableflip tells a process it was
// started by an upgrade. tableflip sets it again for each child it starts.
const tableflipEnv = "TABLEFLIP_HAS_PARENT_7DIU3"

// forgetTableflipParent clears what tableflip.New consumed in a process
// started by an upgrade and leaves for every process this one starts: its
// variable, which would make a tableflip or baton program started from here
// believe it has a parent (and fail reading fds it does not have), and fds
// 3 and 4, the ready pipe and the pipe that tells the parent's exit, which
// tableflip opens without close-on-exec. tableflip keeps using both fds
// itself; its children get theirs explicitly, not by inheritance.
func forgetTableflipParent() {
	os.Unsetenv(tableflipEnv)
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
}

// newUpgrader builds the Upgrader on tf; env is BATON_HANDOFF as this
// process found it. The steps: the registry with the upgrader's own
// sections, the previous generation (if any), the handoff socket for the
// next one, the control socket.
func newUpgrader(tf flipper, opts Options, env string) (*Upgrader, error) {
	opts.setDefaults()
	if opts.StateFile != "" {
		if err := checkStateFileDir(opts.StateFile); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	// The variable describes this process's start only; children get
	// their own, set by Upgrade before each attempt.
	os.Unsetenv(envHandoff)

	u, err := newUpgraderState(tf, opts, m)
	if err != nil {
		return nil, err
	}
	if opts.PIDFile != "" {
		// A relative PIDFile is in the working directory the process
		// started in (as tableflip has it), whatever the process's
		// directory is when it writes or removes the file.
		u.pidFile = opts.PIDFile
		if wd, err := os.Getwd(); err == nil && !filepath.IsAbs(u.pidFile) {
			u.pidFile = filepath.Join(wd, u.pidFile)
		}
	}
	u.watchParent(env)
	if tf.HasParent() {
		u.takeInheritedUnix()
	}
	u.log = u.log.With("generation", u.gen)
	if m != nil {
		m.generation.Set(float64(u.gen))
	}
	if err := u.openOwnHandoff(); err != nil {
		u.Close()
		return nil, err
	}
	if opts.ControlSocket != "" {
		if u.control, err = u.listenControl(opts.ControlSocket); err != nil {
			u.Close()
			return nil, err
		}
	}
	u.preparePIDFile()
	return u, nil
}

// newUpgraderState returns the Upgrader with its registry, to which it adds
// the counters and history sections, and its channels; nothing is running.
func newUpgraderState(tf flipper, opts Options, m *metrics) (*Upgrader, error) {
	reg := opts.State
	if reg == nil {
		var err error
		if reg, err = state.NewRegistry(state.Options{Logger: opts.Logger}); err != nil {
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
	return u, nil
}

// watchParent takes the handoff from the previous generation, if this
// process was started by an upgrade, and watches for that process's exit:
// parentGone closes when it has exited (at once if there is none).
func (u *Upgrader) watchParent(env string) {
	if !u.tf.HasParent() {
		close(u.parentGone)
		return
	}
	u.adoptParent(env)
	ctx, cancel := context.WithCancel(context.Background())
	u.stopWatch = cancel
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if err := u.tf.WaitForParent(ctx); err == nil || !errors.Is(err, context.Canceled) {
			close(u.parentGone)
		}
	}()
}

// openOwnHandoff creates the handoff socket pair to the next generation.
// tableflip passes the child's end to every process this one starts, under
// a name carrying the child's generation; this process keeps the other end
// across attempts.
func (u *Upgrader) openOwnHandoff() error {
	parentEnd, childEnd, err := newSocketPair()
	if err != nil {
		return err
	}
	err = u.tf.AddFile(handoffFileName+strconv.Itoa(u.gen+1), childEnd)
	childEnd.Close()
	if err != nil {
		parentEnd.Close()
		return fmt.Errorf("register handoff socket: %w", err)
	}
	if u.own, err = fileConn(parentEnd); err != nil {
		return fmt.Errorf("handoff socket: %w", err)
	}
	return nil
}

// Generation returns the process's generation: 0 for a process that was
// not started by an upgrade, one more than its parent's otherwise.
func (u *Upgrader) Generation() int { return u.gen }

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Exit returns a channel that is closed when a new process has taken over.
// The caller should then call Shutdown and exit.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// Ready reports that the process has started: its listeners are open and its
// state restored (Ready calls Restore if the caller has not). In a process
// started by an upgrade this completes the upgrade: the PID file names this
// process, and the old one starts to drain. If Restore failed, Ready returns
// its error and reports nothing: the process should exit. So it does with
// ErrUpgradeCalledOff, returned when the previous generation's caller gave
// up on the upgrade (its deadline passed) before this process was ready.
// Ready is idempotent.
//
// If the previous generation runs a probation (its Options.Probation),
// Ready returns once this process serves on probation: its participants
// stay frozen (background work waits) and the pid file, the ready byte,
// the control socket, the periodic state file and StepReady all wait for
// the previous generation's commit at the end of the probation.
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
	fault(faultNewSlowReady, u.gen, u.startAttempt)
	u.askOnce.Do(func() { u.askErr = u.askReady() })
	if u.askErr != nil {
		return u.askErr
	}
	if u.probation > 0 {
		return u.readyOnProbation()
	}
	if err := u.signalReady(); err != nil {
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
	u.completeReady()
	return nil
}

// signalReady makes the pid file name this process, then writes
// tableflip's ready byte: the previous generation, if any, commits to this
// process when the byte arrives, and the file already names it then. If
// the pid file cannot be written no byte is written.
func (u *Upgrader) signalReady() error {
	if err := u.writePIDFile(); err != nil {
		return err
	}
	return u.tf.Ready()
}

// completeReady is what Ready does once the ready byte is written (after a
// probation, at the commit): the upgrade that made this process is counted
// and recorded, the background goroutines start, this process owns its
// Unix sockets, and StepReady is emitted.
func (u *Upgrader) completeReady() {
	if u.tf.HasParent() {
		// The new process counts the upgrade that made it: the old one
		// may be gone before a scrape could see it there.
		u.counters.Counter(counterUpgradeSuccess).Inc()
		u.history.completePending(os.Getpid(), time.Now())
	}
	u.startBackground()
	u.ownUnixSockets()
	for _, name := range u.closeUnadopted() {
		u.log.Warn("closed a socket-activated listener no Listen call asked for", "listener", name)
	}
	if u.startID != "" {
		u.log.Info("ready", "listeners", len(u.Listeners()), "upgrade", u.startID)
	} else {
		u.log.Info("ready", "listeners", len(u.Listeners()))
	}
	u.emit(Event{Step: StepReady, Pid: os.Getpid()})
}

// startBackground starts what runs once the process is ready, each in a
// goroutine release joins: the wait for the previous generation's final
// counts, the control server and the periodic state file write.
func (u *Upgrader) startBackground() {
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
}

// State returns the registry of participants whose state moves to the new
// process. Register participants before Restore or Ready.
func (u *Upgrader) State() *state.Registry { return u.reg }

// Counters returns the counters that survive upgrades.
func (u *Upgrader) Counters() *Counters { return u.counters }
