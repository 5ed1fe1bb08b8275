// Command grpcrecipe is the gRPC recipe for baton: a gRPC service (the
// standard health service, unary Check and streaming Watch) on a listener
// baton hands over, upgrading itself on SIGHUP.
//
// It lives in a module of its own so that baton does not depend on gRPC.
// The recipe: serve only once Ready has succeeded (until then the old
// process serves); on the drain, an OnShutdown hook marks the service
// NOT_SERVING, which Watch streams receive and clients take as "reconnect",
// then GracefulStop, which sends GOAWAY (grpc-go's two-step one, with a
// ping between) and waits for the RPCs in flight; at the drain's deadline
// Stop ends what is left with status Unavailable, which clients retry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batonhq/baton/upgrader"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpcrecipe:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP `address` to serve gRPC on")
	pidFile := flag.String("pidfile", "", "write the serving pid to this `file`")
	drain := flag.Duration("drain", 10*time.Second, "drain deadline")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidFile, DrainTimeout: *drain, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()
	ln, err := u.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	u.OnShutdown(drainGRPC(srv, hs))
	if err := u.Ready(); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { <-served }() // Serve returns once GracefulStop or Stop ran
	log.Info("serving", "addr", ln.Addr().String())
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				return shutdown(u, *drain)
			}
			go func() {
				if _, err := u.Upgrade(context.Background()); err != nil {
					log.Error("upgrade failed", "err", err)
				}
			}()
		case <-u.Exit():
			return shutdown(u, *drain)
		}
	}
}

// drainGRPC is the OnShutdown hook: NOT_SERVING first, so that watchers
// move on, then GracefulStop, cut short by Stop at ctx's deadline.
func drainGRPC(srv *grpc.Server, hs *health.Server) func(context.Context) error {
	return func(ctx context.Context) error {
		hs.Shutdown()
		done := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			srv.Stop()
			<-done
			return ctx.Err()
		}
	}
}

func shutdown(u *upgrader.Upgrader, drain time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := u.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
