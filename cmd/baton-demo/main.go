// Command baton-demo is the example service for baton: an HTTP server that
// upgrades itself in place on SIGHUP without dropping a request.
//
//	go build -o baton-demo ./cmd/baton-demo && ./baton-demo -pidfile demo.pid
//	curl -s 127.0.0.1:8080/ ; kill -HUP $(cat demo.pid) ; curl -s 127.0.0.1:8080/
//
// SIGHUP (or SIGUSR2) upgrades to the binary now at the same path; SIGTERM
// and SIGINT stop gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// version is the demo's release; set it with -version or at build time with
// -ldflags "-X main.version=v2".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, errHelp) || errors.Is(err, errVersion) {
			return
		}
		fmt.Fprintln(os.Stderr, "baton-demo:", err)
		os.Exit(1)
	}
}

type config struct {
	addr           string
	pidFile        string
	drain          time.Duration
	upgradeTimeout time.Duration
	version        string
	logFormat      string
	stateFile      string
	stateInterval  time.Duration
	kvEntries      int
	stateMaxBytes  int64
	control        string
	tasks          int
	tasksAsData    bool
	restoreGC      string
	badTasks       int
	hungTasks      int
	taskFreeze     time.Duration
	taskStop       time.Duration
	taskInterval   time.Duration
	taskJitter     time.Duration
	taskLog        string
	web            webConfig // web.go: HTTPS, h2c, server-sent events
	data           dataConfig
	probation      time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("baton-demo", flag.ContinueOnError)
	// The flag package would print a parse error and the whole usage, and
	// run's caller prints the error again: the error alone is printed
	// once, by main, and -h prints the help to stdout (help.go).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.version = version
	vf := &versionFlag{version: &c.version}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "TCP `address` to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the pid of the serving process to this `file`")
	fs.DurationVar(&c.drain, "drain", upgrader.DefaultDrainTimeout, "how long the old process may drain after an upgrade")
	fs.DurationVar(&c.upgradeTimeout, "upgrade-timeout", upgrader.DefaultUpgradeTimeout, "how long a new process may take to become ready")
	fs.DurationVar(&c.probation, "probation", 0, "after an upgrade, how long the old process stands by to take the service back if the new one dies or fails GET /healthz (0: none)")
	fs.Var(vf, "version", "print the build (module version, VCS revision, Go version) and exit; -version=STRING sets the version this process reports")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.stateFile, "state-file", "", "keep the state in this `file` across full restarts")
	fs.DurationVar(&c.stateInterval, "state-file-interval", 0, "also write the state file this often (0: only when stopping)")
	fs.StringVar(&c.control, "control", "", "serve the baton control socket at this `path`")
	fs.IntVar(&c.tasks, "tasks", 0, "run `n` background tasks that survive upgrades")
	fs.BoolVar(&c.tasksAsData, "tasks-as-data", false, "make the -tasks tasks data of kind demo.counter: the first generation creates them, the later ones register the kind only and restore the tasks from the state")
	fs.StringVar(&c.restoreGC, "restore-gc", "auto", "GOGC while the state is restored: off, keep (the environment's GOGC), a `percent`, or auto (keep); set back once restored")
	fs.IntVar(&c.badTasks, "bad-tasks", 0, "also run `n` tasks that panic on every run (supervision demo)")
	fs.IntVar(&c.hungTasks, "hung-tasks", 0, "also run `n` tasks whose runs ignore their context and never return (stop-bound demo)")
	fs.DurationVar(&c.taskFreeze, "task-freeze-timeout", 0, "how long an upgrade waits for task runs in flight (0: worker.DefaultFreezeTimeout)")
	fs.DurationVar(&c.taskStop, "task-stop-timeout", 0, "how long a stopping process waits for a cancelled task run before abandoning it (0: worker.DefaultStopTimeout)")
	fs.DurationVar(&c.taskInterval, "task-interval", time.Second, "how often each task runs")
	fs.DurationVar(&c.taskJitter, "task-jitter", 0, "delay each task run by a random duration up to this")
	fs.StringVar(&c.taskLog, "task-log", "", "append \"task_id seq pid\" to this `file` for every task run")
	c.data.flags(fs)
	fs.IntVar(&c.kvEntries, "kv-entries", 2000, "entries the first generation puts in the demo map")
	fs.Int64Var(&c.stateMaxBytes, "state-max-bytes", 0, "largest snapshot, in `bytes`, to hand over, receive or write (0: state.DefaultMaxSize)")
	c.web.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(os.Stdout, fs)
			return c, errHelp
		}
		return c, fmt.Errorf("%w (baton-demo -h lists the flags)", err)
	}
	if vf.print {
		fmt.Printf("baton-demo %s\n", buildLine(c.version))
		return c, errVersion
	}
	if err := c.web.check(); err != nil {
		return c, err
	}
	if _, _, err := parseRestoreGC(c.restoreGC); err != nil {
		return c, err
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return c, fmt.Errorf("-log-format must be text or json, not %q", c.logFormat)
	}
	return c, nil
}

func newLogger(format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.logFormat)
	stopProfile, err := startProfile() // profile.go
	if err != nil {
		return err
	}
	defer stopProfile() // stopped once serving, or on the way out

	// Signals are caught from the start: a SIGHUP that arrives while the
	// process is starting must not kill it (it is answered once ready).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	svc, err := newService(cfg, log)
	if err != nil {
		return err
	}
	defer svc.close()
	u := svc.u
	log = log.With("pid", os.Getpid(), "generation", u.Generation())
	ln, err := svc.listenAndRestore(cfg)
	if err != nil {
		return err
	}
	d := svc.serve(cfg, ln)
	tlsAddr, err := cfg.web.serveTLS(u, d.handler)
	if err != nil {
		return err
	}
	if err := u.Ready(); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	d.ready.Store(true)
	log.Info("serving", "addr", ln.Addr().String(), "version", cfg.version, "tls_addr", tlsAddr, "start_cpu", startCPU())
	stopProfile()
	// The map was checked by its restore and is built now, while this
	// process serves: a request that needs it first builds it itself.
	built := make(chan struct{})
	go func() {
		defer close(built)
		svc.kv.build()
	}()
	defer func() { <-built }()

	// The tasks start only now: their state was restored, and the old
	// process, if any, has stopped its own for good.
	stopTasks := svc.runTasks(cfg.drain, log)
	defer stopTasks()
	return signalLoop(u, sigs, cfg.drain, log)
}

// service is the demo's parts: the registries, the map, the tasks and the
// upgrader with its systemd attachment.
type service struct {
	reg    *prometheus.Registry
	states *state.Registry
	kv     *kvStore
	sup    *worker.Supervisor
	tlog   *taskLog
	u      *upgrader.Upgrader
	sd     *sdHook
	// healthURL is GET /healthz on the service's own listener, set once it
	// listens: the probation's health check (a *string).
	healthURL atomic.Pointer[string]
}

// newService builds the service's parts; close releases them.
func newService(cfg config, log *slog.Logger) (*service, error) {
	svc := &service{reg: prometheus.NewRegistry()}
	var err error
	svc.states, err = state.NewRegistry(state.Options{UserVersion: cfg.version, MaxSize: cfg.stateMaxBytes, Logger: log})
	if err != nil {
		return nil, err
	}
	if svc.kv, err = newKVStore(); err != nil {
		return nil, err
	}
	if err := svc.kv.register(svc.states); err != nil {
		return nil, err
	}
	svc.sup, svc.tlog, err = setupTasks(cfg, svc.states, svc.kv.schema, log, svc.reg)
	if err != nil {
		return nil, err
	}
	svc.u, err = upgrader.New(upgrader.Options{
		State:             svc.states,
		StateFile:         cfg.stateFile,
		StateFileInterval: cfg.stateInterval,
		ControlSocket:     cfg.control,
		UpgradeTimeout:    cfg.upgradeTimeout,
		DrainTimeout:      cfg.drain,
		PIDFile:           cfg.pidFile,
		Logger:            log,
		Registerer:        svc.reg,
		Probation:         cfg.probation,
		HealthCheck:       svc.healthCheck,
	})
	if err != nil {
		return nil, err
	}
	svc.kv.generation = svc.u.Generation
	if err := registerTaskControl(svc.u, svc.sup); err != nil { // taskcontrol.go: baton tasks
		svc.u.Close()
		return nil, err
	}
	svc.sd, err = attachSystemd(svc.u, log) // systemd.go: activated socket, sd_notify, watchdog
	if err != nil {
		svc.u.Close()
		return nil, err
	}
	return svc, nil
}

func (svc *service) close() {
	svc.sd.close()
	svc.u.Close()
}

// healthCheck is the probation's check: GET /healthz on the service's own
// address, on a fresh connection, which the new process accepts (the old one
// no longer does during a probation).
func (svc *service) healthCheck(ctx context.Context) error {
	url := svc.healthURL.Load()
	if url == nil {
		return errors.New("not listening yet")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz answered %s by pid %s", resp.Status, resp.Header.Get("X-Pid"))
	}
	return nil
}

// listenAndRestore opens the HTTP listener and restores the state, then
// puts this generation's entries in the map. The state comes over before
// anything is served, so that no request sees it half restored; the map
// is only checked by then, and built on its first use or once serving
// (kvStore.build).
func (svc *service) listenAndRestore(cfg config) (net.Listener, error) {
	u := svc.u
	ln, err := u.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, listenError("-addr", cfg.addr, err) // binderr.go
	}
	health := "http://" + ln.Addr().String() + "/healthz"
	svc.healthURL.Store(&health)
	gcBack := restoreGC(cfg.restoreGC) // restoregc.go
	info, err := u.Restore(context.Background())
	gcBack()
	if err != nil {
		return nil, err
	}
	if cfg.tasksAsData && !slices.ContainsFunc(info.Sections, func(s state.Section) bool { return s.Name == worker.DefaultName }) {
		// The first generation: no state brought the tasks.
		if err := addDataTasks(svc.sup, cfg.tasks, cfg.taskInterval, cfg.taskJitter, svc.kv.schema); err != nil {
			return nil, err
		}
	}
	svc.kv.seed(cfg.kvEntries)
	svc.kv.set(fmt.Sprintf("gen-%d", u.Generation()), kvEntry{Value: strconv.Itoa(os.Getpid()), Gen: u.Generation()})
	return ln, nil
}

// serve starts answering HTTP on ln.
func (svc *service) serve(cfg config, ln net.Listener) *demo {
	u, sup := svc.u, svc.sup
	d := &demo{pid: os.Getpid(), generation: u.Generation(), version: cfg.version,
		hits: u.Counters().Counter("demo.hits")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.root)
	mux.HandleFunc("GET /kv", svc.kv.serveHTTP)
	mux.HandleFunc("GET /tasks", serveTasks(sup))
	routeDataTasks(mux, sup)
	u.AddStatus("worker", func() any { return sup.Stats() })
	mux.HandleFunc("POST /echo", echo)
	mux.HandleFunc("GET /events", events(cfg.web.eventInterval))
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.Handle("GET /metrics", svc.metricsHandler())
	d.handler = d.withPid(mux)
	u.Serve(&http.Server{Handler: d.handler, ReadHeaderTimeout: 10 * time.Second, Protocols: cfg.web.protocols()}, ln)
	return d
}

// metricsHandler serves the registry. The Go runtime's and the process's
// collectors are registered at the first scrape, not at the start: building
// them (0.1 ms, most of it the descriptions of runtime/metrics) would delay
// the moment a new process is ready, and nothing reads them before a
// scrape.
func (svc *service) metricsHandler() http.Handler {
	var once sync.Once
	h := promhttp.HandlerFor(svc.reg, promhttp.HandlerOpts{Registry: svc.reg})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			svc.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		})
		h.ServeHTTP(w, r)
	})
}

// runTasks starts the task supervisor and returns the function that stops
// it, waiting up to drain for the runs in flight, and closes the task log.
func (svc *service) runTasks(drain time.Duration, log *slog.Logger) (stop func()) {
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- svc.sup.Run(runCtx) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := svc.sup.Shutdown(ctx); err != nil {
			log.Warn("tasks did not stop in time", "err", err)
		}
		stopRun()
		<-runDone
		if svc.tlog != nil {
			if err := svc.tlog.close(); err != nil {
				log.Error("task log", "err", err)
			}
		}
	}
}

// signalLoop answers signals until the process stops (SIGTERM, SIGINT) or
// hands over to a new one, then shuts the upgrader down.
func signalLoop(u *upgrader.Upgrader, sigs <-chan os.Signal, drain time.Duration, log *slog.Logger) error {
	var upgrades sync.WaitGroup
	defer upgrades.Wait()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				log.Info("stopping", "signal", sig.String())
				return shutdown(u, drain, log)
			}
			log.Info("upgrade requested", "signal", sig.String())
			upgrades.Go(func() { upgrade(u, log) })
		case <-u.Exit():
			log.Info("handed over to the new process: draining")
			return shutdown(u, drain, log)
		}
	}
}

// upgrade starts the binary at the same path and logs the outcome.
func upgrade(u *upgrader.Upgrader, log *slog.Logger) {
	res, err := u.Upgrade(context.Background())
	if errors.Is(err, upgrader.ErrClosed) {
		log.Warn("upgrade abandoned: stopping", "err", err)
		return
	}
	if err != nil {
		log.Error("upgrade failed: still serving", "err", err)
		return
	}
	log.Info("upgraded", "new_pid", res.Pid, "new_generation", res.Generation, "duration", res.Duration)
}

func shutdown(u *upgrader.Upgrader, drain time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// A drain that ran out of time is logged and not a failure; a state
	// file that was not written is: the state of this run is lost.
	err := u.Shutdown(ctx)
	if errors.Is(err, upgrader.ErrStateFile) || err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("exiting")
	return nil
}

// setupTasks creates the task supervisor with the demo's tasks and
// registers it, and the task log, as state participants.
func setupTasks(cfg config, states *state.Registry, schema uint32, log *slog.Logger, reg prometheus.Registerer) (*worker.Supervisor, *taskLog, error) {
	sup, err := worker.New(worker.Options{Logger: log.With("pid", os.Getpid()), Registerer: reg,
		FreezeTimeout: cfg.taskFreeze, StopTimeout: cfg.taskStop})
	if err != nil {
		return nil, nil, err
	}
	var tlog *taskLog
	if cfg.taskLog != "" {
		if tlog, err = openTaskLog(cfg.taskLog); err != nil {
			return nil, nil, err
		}
	}
	if cfg.tasksAsData {
		// The tasks are data: the kind is registered here, the tasks
		// come from the state, or from addDataTasks after the restore.
		k, err := counterKind(tlog, schema)
		if err == nil {
			err = sup.RegisterKind(k)
		}
		if err != nil {
			return nil, nil, err
		}
	} else if err := addTasks(sup, cfg.tasks, cfg.taskInterval, cfg.taskJitter, tlog, schema); err != nil {
		return nil, nil, err
	}
	if err := addBadTasks(sup, cfg.badTasks, cfg.hungTasks, cfg.taskInterval); err != nil {
		return nil, nil, err
	}
	if err := registerKinds(sup, cfg.data, tlog); err != nil {
		return nil, nil, err
	}
	if err := sup.Register(states); err != nil {
		return nil, nil, err
	}
	if tlog != nil {
		if err := states.Register(tlog.participant()); err != nil {
			return nil, nil, err
		}
	}
	return sup, tlog, nil
}

type demo struct {
	pid        int
	generation int
	version    string
	ready      atomic.Bool
	// hits counts GET / answered by every generation together.
	hits *upgrader.Counter
	// handler serves every route, on every listener.
	handler http.Handler
}

// withPid marks every response with the pid that answered it, so a client
// can see which generation served it.
func (d *demo) withPid(h http.Handler) http.Handler {
	pid := strconv.Itoa(d.pid)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		h.ServeHTTP(w, r)
	})
}

func (d *demo) root(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	proto, overTLS := connKind(r)
	w.Write(rootBody(proto, overTLS, d.pid, d.generation, d.version, d.hits.Inc())) // rootbody.go
}

func (d *demo) healthz(w http.ResponseWriter, r *http.Request) {
	if !d.ready.Load() {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// echo answers with the request body, up to 1 MiB. It reads the whole body
// before replying: Go's HTTP/1 server stops reading a request body once the
// response headers are out.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(body)
}
