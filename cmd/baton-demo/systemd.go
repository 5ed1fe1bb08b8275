package main

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/sdupgrade"
	"github.com/batonhq/baton/upgrader"
)

// sdHook is the demo's tie to systemd (baton-demo.service and .socket in
// systemd/): it adopts the activated socket, reports each step of an upgrade
// and keeps the watchdog fed from the process that is the unit's main one.
// The zero sdHook, for a demo not run by systemd, does nothing.
type sdHook struct {
	integ  *sdupgrade.Integration
	cancel context.CancelFunc
	wg     sync.WaitGroup // the watchdog goroutine
}

// attachSystemd attaches the systemd integration when the demo runs under
// systemd (NOTIFY_SOCKET) or is socket-activated (LISTEN_FDS, as
// systemd-socket-activate does it). Call it before the first Listen: the
// activated socket named "http" (or bound to the -addr address) is what
// "-addr http" (or that address) then takes. The fd store is used when
// $FDSTORE says the unit has one (see sdupgrade.FDStoreAuto).
func attachSystemd(u *upgrader.Upgrader, log *slog.Logger) (*sdHook, error) {
	h := &sdHook{}
	if os.Getenv(systemd.EnvNotifySocket) == "" && os.Getenv(systemd.EnvListenFDs) == "" {
		return h, nil
	}
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		return nil, err
	}
	// Before the first upgrade: it takes WATCHDOG_PID out of the
	// environment the next generation inherits.
	wd, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: n, Logger: log})
	if err != nil {
		return nil, err
	}
	if h.integ, err = sdupgrade.Attach(u, sdupgrade.AttachOptions{Notifier: n, Logger: log}); err != nil {
		return nil, err
	}
	if wd.Enabled() {
		var ctx context.Context
		ctx, h.cancel = context.WithCancel(context.Background())
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.integ.RunWatchdog(ctx, wd)
		}()
		log.Info("systemd watchdog on", "timeout", wd.Timeout(), "interval", wd.Interval())
	}
	return h, nil
}

// close stops the watchdog and detaches the integration.
func (h *sdHook) close() {
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
	if h.integ != nil {
		h.integ.Close()
	}
}
