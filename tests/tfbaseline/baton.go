//go:build baton

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/batonhq/baton/upgrader"
)

// runBaton serves the handler through baton's upgrader as baton-demo does,
// but with no state of its own, no metrics and no demo map: against
// runTableflip it differs in the upgrade library only.
func runBaton(cfg config, log *slog.Logger) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	u, err := upgrader.New(upgrader.Options{PIDFile: cfg.pidFile, DrainTimeout: cfg.drain, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()
	log = log.With("pid", os.Getpid(), "generation", u.Generation())
	h := newHandler(u.Generation())
	ln, err := u.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	u.Serve(h.server(), ln)
	if err := u.Ready(); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	h.ready.Store(true)
	log.Info("serving", "addr", ln.Addr().String(), "version", version)

	var upgrades sync.WaitGroup
	defer upgrades.Wait()
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				log.Info("stopping", "signal", sig.String())
				return drain(u.Shutdown, cfg, log)
			}
			log.Info("upgrade requested")
			// Upgrade returns once the new process is ready; Exit is
			// closed then, and the loop drains.
			upgrades.Add(1)
			go func() {
				defer upgrades.Done()
				if _, err := u.Upgrade(context.Background()); err != nil {
					log.Error("upgrade failed: still serving", "err", err)
				}
			}()
		case <-u.Exit():
			log.Info("draining")
			return drain(u.Shutdown, cfg, log)
		}
	}
}
