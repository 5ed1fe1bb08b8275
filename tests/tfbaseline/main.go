// Command tfbaseline is the reference the upgrade benchmark (tests/bench)
// measures baton against: the same HTTP endpoints as baton-demo, upgraded
// the canonical tableflip way, as tableflip's README and its net/http
// example do it: tableflip.New, Listen through the upgrader, an
// http.Server, Upgrade on SIGHUP, Ready, <-upg.Exit(), then
// http.Server.Shutdown with a timeout. Nothing here is tuned: the point is
// to measure what a careful user of tableflip alone gets.
//
//	go build -o tfbaseline ./tests/tfbaseline && ./tfbaseline -addr 127.0.0.1:8080 -pidfile tf.pid
//	kill -HUP $(cat tf.pid)
//
// With -plain it serves the same handler on a plain net.Listen socket with
// no upgrader at all: the benchmark's reference for the upgrader's
// steady-state overhead. SIGTERM and SIGINT stop either mode gracefully.
//
// It logs in slog's text format with the fields the benchmark reads:
// msg="serving" with addr, and pid on every line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

// generationEnv carries the generation number to the next process: tableflip
// passes the environment of the moment it starts the child.
const generationEnv = "TFBASELINE_GENERATION"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tfbaseline:", err)
		os.Exit(1)
	}
}

type config struct {
	addr    string
	pidFile string
	drain   time.Duration
	plain   bool
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("tfbaseline", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "TCP `address` to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the pid of the serving process to this `file`")
	// Same default as baton-demo's -drain (upgrader.DefaultDrainTimeout).
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "how long the old process may drain after an upgrade")
	fs.BoolVar(&c.plain, "plain", false, "serve on a plain listener, without tableflip: no upgrades")
	err := fs.Parse(args)
	return c, err
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	gen, _ := strconv.Atoi(os.Getenv(generationEnv))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid(), "generation", gen)
	h := &handler{pid: os.Getpid(), generation: gen}
	srv := &http.Server{Handler: h.mux(), ReadHeaderTimeout: 10 * time.Second}
	if cfg.plain {
		return runPlain(cfg, srv, h, log)
	}

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
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	// Exit is closed after a successful upgrade or on Stop.
	log.Info("draining")
	// Shutdown closes the listener and idle connections at once and waits
	// for the active ones, up to the drain timeout.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("drain deadline reached", "err", err)
	}
	log.Info("exiting")
	return nil
}

// runPlain serves without any upgrader, until SIGTERM or SIGINT.
func runPlain(cfg config, srv *http.Server, h *handler, log *slog.Logger) error {
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
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	h.ready.Store(true)
	log.Info("serving", "addr", ln.Addr().String(), "version", version, "plain", true)
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("exiting")
	return nil
}

// handler answers what baton-demo answers on the paths the benchmark uses,
// with the same bytes on the wire, so that a comparison measures the
// upgrader and not the handler.
type handler struct {
	pid        int
	generation int
	ready      atomic.Bool
	hits       atomic.Uint64 // this process's only: tableflip hands over no state
}

func (h *handler) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.root)
	mux.HandleFunc("POST /echo", echo)
	mux.HandleFunc("GET /healthz", h.healthz)
	// Every response names the pid that answered it.
	pid := strconv.Itoa(h.pid)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		mux.ServeHTTP(w, r)
	})
}

func (h *handler) root(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"pid":        h.pid,
		"generation": h.generation,
		"version":    version,
		"hits":       h.hits.Add(1),
	})
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if !h.ready.Load() {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// echo answers with the request body, up to 1 MiB, read whole before the
// reply as baton-demo does.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(body)
}
