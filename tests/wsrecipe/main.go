// Command wsrecipe is the WebSocket recipe for baton: a WebSocket echo
// service that upgrades itself on SIGHUP. On the drain every connection
// gets a close frame with status 1012 ("service restart") and the client
// reconnects, reaching the new process.
//
// It lives in a module of its own so that baton does not depend on a
// WebSocket library. It uses github.com/coder/websocket: kept by Coder
// (it was nhooyr.io/websocket), no dependencies, context-aware calls and
// a Close that performs the closing handshake. gorilla/websocket works as
// well (it is maintained again since 2023), with deadlines instead of
// contexts and the close handshake left to the caller.
//
// The recipe's two parts: the handler watches upgrader.Draining and
// closes with websocket.StatusServiceRestart; and, since a WebSocket
// connection is hijacked and so no longer tracked by the drain, an
// OnShutdown hook waits for the handlers to finish, bounded by the
// drain's deadline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/upgrader"
	"github.com/coder/websocket"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wsrecipe:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP `address` to serve on")
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
	ws := &wsServer{log: log}
	u.OnShutdown(ws.wait)
	u.Serve(&http.Server{Handler: ws, ReadHeaderTimeout: 10 * time.Second}, ln)
	if err := u.Ready(); err != nil {
		return err
	}
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

func shutdown(u *upgrader.Upgrader, drain time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := u.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// wsServer echoes each text message back with the pid that answered.
type wsServer struct {
	log      *slog.Logger
	handlers sync.WaitGroup
}

func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Draining must be taken before Accept: the hijacked connection's
	// request context stays valid, and so does the channel.
	draining := upgrader.Draining(r.Context())
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	s.handlers.Add(1)
	defer s.handlers.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-draining:
			// 1012: the client should reconnect, and will reach
			// the new process.
			c.Close(websocket.StatusServiceRestart, "restarting")
		case <-ctx.Done():
		}
	}()
	pid := strconv.Itoa(os.Getpid())
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, append(msg, " "+pid...)); err != nil {
			return
		}
	}
}

// wait is the OnShutdown hook: the drain does not see hijacked
// connections, so it waits here for their handlers, which Draining told to
// close, until ctx's deadline.
func (s *wsServer) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
