package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/cloudflare/tableflip"
)

// generationEnv carries the generation number to the next process: tableflip
// passes on the environment of the moment it starts the child.
const generationEnv = "TFBASELINE_GENERATION"

// runTableflip is tableflip's README recipe with its net/http example's
// graceful shutdown.
func runTableflip(cfg config, log *slog.Logger) error {
	gen, _ := strconv.Atoi(os.Getenv(generationEnv))
	log = log.With("pid", os.Getpid(), "generation", gen)
	h := newHandler(gen)
	srv := h.server()

	upg, err := tableflip.New(tableflip.Options{PIDFile: cfg.pidFile})
	if err != nil {
		return err
	}
	defer upg.Stop()

	// Upgrade on SIGHUP, as the README does. SIGTERM and SIGINT stop: Stop
	// closes Exit and interrupts an upgrade in progress, so they have their
	// own goroutine.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			log.Info("upgrade requested")
			os.Setenv(generationEnv, strconv.Itoa(gen+1))
			if err := upg.Upgrade(); err != nil {
				log.Error("upgrade failed: still serving", "err", err)
				continue
			}
			log.Info("upgraded")
		}
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(term)
	go func() {
		sig := <-term
		log.Info("stopping", "signal", sig.String())
		upg.Stop()
	}()

	// Listen must be called before Ready.
	ln, err := upg.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if err := upg.Ready(); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	h.ready.Store(true)
	log.Info("serving", "addr", ln.Addr().String(), "version", version)

	select {
	case <-upg.Exit():
		// Closed after a successful upgrade or on Stop.
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("draining")
	// Shutdown closes the listener and the idle connections at once and
	// waits for the active ones, up to the drain timeout.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("drain deadline reached", "err", err)
	}
	log.Info("exiting")
	return nil
}
