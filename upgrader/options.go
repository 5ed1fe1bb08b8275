package upgrader

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/batonhq/baton/state"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero Options fields.
const (
	// DefaultUpgradeTimeout bounds the time from starting the new process
	// to its ready notification. A process that is not ready by then is
	// killed and the upgrade fails.
	DefaultUpgradeTimeout = time.Minute
	// DefaultDrainTimeout bounds the drain of the old process after a
	// successful upgrade, or of the only process on a graceful stop.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultIdleGrace is how long a keep-alive connection must have been
	// quiet before a drain closes it.
	DefaultIdleGrace = time.Second
	// DefaultStateFileTimeout bounds freezing the participants for the
	// state file written when the process stops.
	DefaultStateFileTimeout = 10 * time.Second
	// ProbationChecks is how many times Options.HealthCheck is called
	// during a probation: at every ProbationChecks-th of it, the last one
	// as it ends.
	ProbationChecks = 4
)

// Options control an Upgrader. The zero value works.
type Options struct {
	// UpgradeTimeout bounds the time from starting the new process to its
	// ready notification. Zero means DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration

	// DrainTimeout is the default deadline Shutdown uses when its context
	// has none. Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration

	// IdleGrace is how long, during a drain, a keep-alive connection must
	// have received nothing before it is closed. Busy connections end after
	// their next reply instead. Zero means DefaultIdleGrace.
	IdleGrace time.Duration

	// PIDFile, if set, is rewritten atomically with the pid of the process
	// that is ready, before the old one starts to drain. Shutdown and Close
	// remove it if it still names this process, so that a clean stop
	// leaves no pid for another program to take. A new process that never
	// becomes ready leaves nothing in the file's directory.
	PIDFile string

	// Logger receives a line for every step of an upgrade. Nil discards.
	Logger *slog.Logger

	// Registerer, if not nil, receives the upgrader's metrics.
	Registerer prometheus.Registerer

	// State holds the participants whose state moves to the new process.
	// Nil means a registry with default options; either way State()
	// returns it and the upgrader adds its counters section to it.
	State *state.Registry

	// StateFile, if set, is where the state is kept across full restarts:
	// written atomically on a graceful stop that is not an upgrade (and
	// every StateFileInterval), and read by a process that starts with no
	// parent, or whose parent died before it handed its state over. New
	// fails with ErrStateFileDir if its directory is missing or cannot be
	// written.
	StateFile string

	// StateFileInterval, if positive, also writes StateFile periodically.
	// Each write freezes the participants briefly.
	StateFileInterval time.Duration

	// StateFileTimeout bounds freezing the participants for the state
	// file written when the process stops. It is a budget of its own,
	// counted from the end of the drain: a drain that ran out its deadline
	// does not also cost the state. Zero means DefaultStateFileTimeout.
	StateFileTimeout time.Duration

	// RefuseCorruptStateFile makes Restore fail when StateFile exists but
	// cannot be used. By default the file is moved aside, the failure is
	// logged and the process starts fresh.
	RefuseCorruptStateFile bool

	// ControlSocket, if set, is the path of a Unix socket on which the
	// baton command asks for the status and triggers upgrades. It is
	// created with mode 0600 and handed over like any listener; only root
	// and this process's user are served. Its directory must be writable by
	// its owner only, who must be this process's user or root (a
	// RuntimeDirectory under /run is); a socket left there by a process
	// that died is replaced, anything else at the path is refused with
	// ErrControlSocket.
	ControlSocket string

	// Probation, if positive, is how long an upgrade stays undecided
	// after the new process reported ready. Meanwhile the new process
	// serves, and this (old) process stands by: it stops accepting but
	// keeps its listening sockets open (the kernel's queue survives), its
	// participants frozen and the snapshot it sent, and it watches the new
	// process through a pidfd. If the new process exits, is killed or
	// fails HealthCheck before the probation ends, the upgrade is rolled
	// back: this process accepts again at once, thaws its participants,
	// rewrites the pid file and serves on; Upgrade returns an
	// *UpgradeError at step "probation" wrapping ErrRolledBack. Only at
	// the end of the probation does the new process write tableflip's
	// ready byte, Upgrade return and Exit close. The new process keeps its
	// own participants frozen until then (its background tasks wait: a
	// rollback repeats and loses no task run); see upgrader/PROTOCOL.md
	// for what of the new process's work a rollback loses. Zero means no
	// probation: the upgrade is final at the ready byte. Set in the old
	// process; a new process of a release without probation makes the
	// upgrade final at once.
	Probation time.Duration

	// HealthCheck, if set, is called during a probation, ProbationChecks
	// times (at every quarter, the last as it ends), each with a context
	// bounded by a quarter of the probation. An error rolls the upgrade
	// back: the new process is killed. It runs in the old process, which
	// no longer accepts, so a check of the service's own address (GET
	// /healthz on its listener) reaches the new process. It must return
	// when its context is done: the upgrade waits for it.
	HealthCheck func(ctx context.Context) error

	// ListenConfig creates listeners that are not inherited. Nil means the
	// zero net.ListenConfig. Its Control function is kept.
	ListenConfig *net.ListenConfig
}

func (o *Options) setDefaults() {
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.StateFileTimeout <= 0 {
		o.StateFileTimeout = DefaultStateFileTimeout
	}
	if o.IdleGrace <= 0 {
		o.IdleGrace = DefaultIdleGrace
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}
