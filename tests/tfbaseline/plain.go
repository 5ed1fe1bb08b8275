package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// runPlain serves the handler on a plain listener until SIGTERM or SIGINT.
func runPlain(cfg config, log *slog.Logger) error {
	log = log.With("pid", os.Getpid(), "generation", 0)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	if cfg.pidFile != "" {
		if err := os.WriteFile(cfg.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
	}
	h := newHandler(0)
	srv := h.server()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	h.ready.Store(true)
	log.Info("serving", "addr", ln.Addr().String(), "version", version, "server", "plain")
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	return drain(srv.Shutdown, cfg, log)
}

// drain stops serving through shutdown (the upgrader's or the
// http.Server's), gracefully, within the -drain timeout: reaching the
// deadline is not an error.
func drain(shutdown func(context.Context) error, cfg config, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("exiting")
	return nil
}
