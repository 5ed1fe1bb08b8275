package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// DefaultWatchdogDivisor divides the watchdog timeout into the ping
// interval: pinging at half the timeout, as sd_watchdog_enabled(3)
// recommends, leaves one missed tick of slack.
const DefaultWatchdogDivisor = 2

// WatchdogEnabled reports the watchdog timeout systemd set for this process
// (WatchdogSec=, passed as WATCHDOG_USEC), like sd_watchdog_enabled(0, …):
// 0 when WATCHDOG_USEC is unset or 0, or when WATCHDOG_PID is set and names
// another process. A malformed variable gives an error wrapping
// ErrInvalidWatchdog. It does not change the environment.
func WatchdogEnabled() (time.Duration, error) {
	d, _, err := watchdogFromEnv()
	return d, err
}

// watchdogFromEnv also reports whether WATCHDOG_PID named this process.
func watchdogFromEnv() (timeout time.Duration, pidIsOurs bool, err error) {
	usecStr, ok := os.LookupEnv(EnvWatchdogUSec)
	if !ok {
		return 0, false, nil
	}
	usec, err := strconv.ParseUint(usecStr, 10, 63)
	if err != nil || usec > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0, false, fmt.Errorf("%w: %s=%q is not a number of microseconds", ErrInvalidWatchdog, EnvWatchdogUSec, usecStr)
	}
	if pidStr, ok := os.LookupEnv(EnvWatchdogPID); ok {
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return 0, false, fmt.Errorf("%w: %s=%q is not a pid", ErrInvalidWatchdog, EnvWatchdogPID, pidStr)
		}
		if pid != os.Getpid() {
			return 0, false, nil
		}
		pidIsOurs = true
	}
	return time.Duration(usec) * time.Microsecond, pidIsOurs, nil
}

// WatchdogOptions configure NewWatchdog. The zero value pings
// $NOTIFY_SOCKET at half of WATCHDOG_USEC with no health check.
type WatchdogOptions struct {
	// Notifier sends the pings. Nil means NewNotifier(NotifierOptions{}).
	Notifier *Notifier

	// Timeout is the watchdog timeout. Zero means WatchdogEnabled(), that
	// is WatchdogSec= of the unit.
	Timeout time.Duration

	// Interval is the time between pings. Zero means
	// Timeout/DefaultWatchdogDivisor.
	Interval time.Duration

	// Check, if set, runs before every ping, on Run's goroutine. A non-nil
	// error withholds that ping: a service that stays unhealthy for the
	// whole Timeout is then treated by systemd as hung (WatchdogSec=,
	// Restart=). A Check that hangs withholds pings too; it should return
	// when ctx is done.
	Check func(ctx context.Context) error

	// Logger receives failed pings and health transitions. Nil discards.
	Logger *slog.Logger

	// KeepEnvironment leaves WATCHDOG_PID in the environment. By default,
	// once NewWatchdog has found that WATCHDOG_PID names this process, it
	// removes it (and keeps WATCHDOG_USEC): the process that takes over at
	// an upgrade is a child that inherits the environment, and a
	// WATCHDOG_PID naming its parent would tell it the watchdog is not its
	// own, so after the MAINPID= handover nobody would ping.
	KeepEnvironment bool
}

// Watchdog pings the service manager's watchdog (WATCHDOG=1) while a health
// check passes. It is immutable after NewWatchdog.
type Watchdog struct {
	notifier *Notifier
	timeout  time.Duration
	interval time.Duration
	check    func(ctx context.Context) error
	log      *slog.Logger
}

// NewWatchdog returns a Watchdog for opts. It is disabled (Run returns at
// once) when the watchdog is off for this process or the Notifier is
// disabled. Errors wrap ErrInvalidWatchdog or ErrInvalidSocket.
func NewWatchdog(opts WatchdogOptions) (*Watchdog, error) {
	w := &Watchdog{
		notifier: opts.Notifier,
		timeout:  opts.Timeout,
		interval: opts.Interval,
		check:    opts.Check,
		log:      opts.Logger,
	}
	if w.notifier == nil {
		n, err := NewNotifier(NotifierOptions{})
		if err != nil {
			return nil, err
		}
		w.notifier = n
	}
	if w.timeout <= 0 {
		d, ours, err := watchdogFromEnv()
		if err != nil {
			return nil, err
		}
		if ours && !opts.KeepEnvironment {
			os.Unsetenv(EnvWatchdogPID)
		}
		w.timeout = d
	}
	if w.interval <= 0 {
		w.interval = w.timeout / DefaultWatchdogDivisor
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w, nil
}

// Enabled reports whether Run will ping.
func (w *Watchdog) Enabled() bool {
	return w.timeout > 0 && w.interval > 0 && w.notifier.Enabled()
}

// Timeout returns the watchdog timeout, 0 when disabled.
func (w *Watchdog) Timeout() time.Duration { return w.timeout }

// Interval returns the time between pings.
func (w *Watchdog) Interval() time.Duration { return w.interval }

// Run pings at once and then every Interval until ctx is done, withholding
// each ping whose Check fails. It blocks: the caller runs it on a goroutine
// it owns and waits for it after cancelling ctx. It returns at once when the
// Watchdog is disabled. A failed send is logged and retried at the next
// tick: a transient error must not end the keep-alive.
//
// In a process that takes over by MAINPID=, start Run only after the
// handover: before it, systemd refuses its pings under NotifyAccess=main.
func (w *Watchdog) Run(ctx context.Context) {
	if !w.Enabled() {
		return
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	healthy := true
	for {
		healthy = w.ping(ctx, healthy)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping runs the check and sends WATCHDOG=1 if it passed. It logs only
// health transitions, so a long outage does not flood the log.
func (w *Watchdog) ping(ctx context.Context, wasHealthy bool) (healthy bool) {
	if w.check != nil {
		if err := w.check(ctx); err != nil {
			if wasHealthy && ctx.Err() == nil {
				w.log.Warn("systemd: health check failed, withholding watchdog pings", "err", err, "timeout", w.timeout)
			}
			return false
		}
		if !wasHealthy {
			w.log.Info("systemd: health check passes again, resuming watchdog pings")
		}
	}
	if ctx.Err() != nil {
		return true
	}
	if _, err := w.notifier.Watchdog(); err != nil {
		w.log.Warn("systemd: watchdog ping failed", "err", err)
	}
	return true
}
