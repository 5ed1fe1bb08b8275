// Command tfbaseline is the reference the upgrade benchmark (tests/bench)
// measures baton against: the HTTP endpoints of baton-demo that the load
// uses, upgraded the canonical tableflip way, as tableflip's README and its
// net/http example do it: tableflip.New, Listen through the upgrader, an
// http.Server, Upgrade on SIGHUP, Ready, <-upg.Exit(), then
// http.Server.Shutdown with a timeout. Nothing is tuned: the point is to
// measure what a careful user of tableflip alone gets.
//
//	go build -o tfbaseline ./tests/tfbaseline && ./tfbaseline -addr 127.0.0.1:8080 -pidfile tf.pid
//	kill -HUP $(cat tf.pid)
//
// -server picks what serves the same handler, so that comparisons differ
// in one thing only:
//
//	tableflip  the canonical tableflip recipe above (the default)
//	baton      baton's upgrader, with no state of its own: the same
//	           program as the baseline but for the upgrade library; it
//	           needs a build with -tags baton, so that the baseline's own
//	           binary links tableflip alone
//	plain      a plain net.Listen socket and http.Server, no upgrades: the
//	           reference for the upgrader's steady-state overhead
//
// SIGTERM and SIGINT stop every mode gracefully. It logs in slog's text
// format with the fields the benchmark reads: msg="serving" with addr, and
// pid on every line; a failed upgrade logs msg="upgrade failed: still
// serving" with err, as baton-demo does.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

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
	server  string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("tfbaseline", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "TCP `address` to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the pid of the serving process to this `file`")
	// Same default as baton-demo's -drain (upgrader.DefaultDrainTimeout).
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "how long the old process may drain after an upgrade")
	fs.StringVar(&c.server, "server", "tableflip", "what serves the handler: tableflip, baton or plain")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.server != "tableflip" && c.server != "baton" && c.server != "plain" {
		return c, fmt.Errorf("-server must be tableflip, baton or plain, not %q", c.server)
	}
	return c, nil
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	switch cfg.server {
	case "baton":
		return runBaton(cfg, log)
	case "plain":
		return runPlain(cfg, log)
	}
	return runTableflip(cfg, log)
}

// handler answers what baton-demo answers on the paths the benchmark uses,
// with the same bytes on the wire, so that a comparison measures what
// serves it and not the handler.
type handler struct {
	pid        int
	generation int
	ready      atomic.Bool
	hits       atomic.Uint64 // this process's only: nothing is handed over
}

func newHandler(generation int) *handler {
	return &handler{pid: os.Getpid(), generation: generation}
}

// server is the http.Server every mode uses, with baton-demo's timeout.
func (h *handler) server() *http.Server {
	return &http.Server{Handler: h.mux(), ReadHeaderTimeout: 10 * time.Second}
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
