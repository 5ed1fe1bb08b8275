package upgradertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
)

// Options describe how to run the service. The zero value runs the binary
// with no arguments in a new directory and waits only for its pid file.
type Options struct {
	// Args are the service's arguments. They must make it write its pid
	// file at Service.PIDFile; "{dir}" in an argument is replaced with the
	// service's directory.
	Args []string
	// Env is added to the test's environment, from which Start removes
	// the variables through which a service manager talks to its service
	// (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*, FDSTORE): a test run under
	// systemd must not make the service attach to it.
	Env []string
	// Dir is the service's directory: its binary is installed there and
	// it runs there. Empty means a new t.TempDir().
	Dir string
	// Name is the installed binary's file name in Dir. Empty means bin's.
	Name string
	// URL is where the service serves HTTP once started, such as
	// http://127.0.0.1:18080. Without Serving, Start waits until GET
	// URL+Health answers 200. Empty with Serving means the URL is taken
	// from the serving line's addr field, if it has one.
	URL string
	// Health is the path Start polls. Empty means "/".
	Health string
	// Serving, if set, is the msg of the log line the service writes
	// (with log/slog's text handler) once it serves, such as "serving".
	// Start then waits for that line from the process it started instead
	// of polling URL.
	Serving string
	// PIDFile is the pid file the service writes (Options.PIDFile of its
	// upgrader), relative to its directory unless absolute. Empty means
	// "service.pid".
	PIDFile string
	// Output also receives everything the service's processes write to
	// their stdout and stderr (which Service.Logs reads). Nil means
	// os.Stderr; io.Discard keeps it out of the test's output.
	Output io.Writer
	// StartTimeout bounds the start. Zero means 10 s.
	StartTimeout time.Duration
}

// Service is a running service under test: the process the test started
// and the generations that replaced it.
type Service struct {
	Dir     string // the service's directory
	Bin     string // the binary it re-executes on an upgrade: replace it to deploy
	PIDFile string
	URL     string
	// Logs holds every line the service's processes wrote to their stdout
	// and stderr, which they share.
	Logs *Logs

	cmd *exec.Cmd

	// procs are the generations seen, in the pid file or logging a
	// line, to stop them all at the end.
	procs Procs
}

// saw records pid as one of the service's processes, as the pid file or a
// log line names it now.
func (s *Service) saw(pid int) { s.procs.Saw(pid) }

// Start installs bin in the service's directory, starts it there and waits
// until it serves (see Options). Every generation is stopped when the test
// ends, and the test fails if one still holds the output 10 s later.
func Start(t testing.TB, bin string, opts Options) *Service {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(bin)
	}
	s := &Service{Dir: dir, Bin: filepath.Join(dir, name), URL: opts.URL}
	s.PIDFile = filepath.Join(dir, "service.pid")
	if filepath.IsAbs(opts.PIDFile) {
		s.PIDFile = opts.PIDFile
	} else if opts.PIDFile != "" {
		s.PIDFile = filepath.Join(dir, opts.PIDFile)
	}
	s.Install(t, bin)
	args := make([]string, len(opts.Args))
	for i, a := range opts.Args {
		args[i] = strings.ReplaceAll(a, "{dir}", dir)
	}
	s.run(t, args, opts.Env, opts.Output)

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if opts.Serving != "" {
		line, err := s.Logs.Wait(timeout, Match{Msg: opts.Serving, Pid: s.cmd.Process.Pid})
		if err != nil {
			t.Fatalf("upgradertest: %s did not start: %v\n%s", s.Bin, err, s.Logs)
		}
		if addr := line.Fields["addr"]; s.URL == "" && addr != "" {
			s.URL = "http://" + addr
		}
		return s
	}
	health := opts.Health
	if health == "" {
		health = "/"
	}
	if err := s.waitServing(health, timeout); err != nil {
		t.Fatalf("%v\n%s", err, s.Logs)
	}
	return s
}

// run starts the service's binary with args and its output read into
// s.Logs (and copied to out), and registers its stop.
func (s *Service) run(t testing.TB, args, env []string, out io.Writer) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.Bin, args...)
	s.cmd.Dir = s.Dir
	s.cmd.Env = append(CleanEnv(), env...)
	s.cmd.Stdout, s.cmd.Stderr = w, w
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	if out == nil {
		out = os.Stderr
	}
	var rd io.Reader = r
	if out != io.Discard {
		rd = io.TeeReader(r, out)
	}
	s.Logs = readLogs(rd, s.saw) // each generation's pidfd opened at its first line
	// Registered before the stop, so it runs after it: once every
	// generation is gone the pipe ends.
	t.Cleanup(func() {
		defer r.Close()
		select {
		case <-s.Logs.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("upgradertest: %s: output still open 10s after the test: a generation is still running", s.Bin)
		}
	})
	s.saw(s.cmd.Process.Pid)
	t.Cleanup(s.stop)
}

func (s *Service) waitServing(health string, timeout time.Duration) error {
	c := newClient(time.Second)
	defer c.CloseIdleConnections()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pid, err := readPid(s.PIDFile); err != nil || pid != s.cmd.Process.Pid {
			continue
		}
		if s.URL == "" {
			return nil
		}
		resp, err := c.Get(s.URL + health)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return nil
		}
	}
	return fmt.Errorf("upgradertest: %s did not serve at %s within %v", s.Bin, s.URL+health, timeout)
}

// stop kills every generation still alive, through the pidfds opened when
// the test saw them: in the pid file, or logging a line.
func (s *Service) stop() {
	if pid, err := readPid(s.PIDFile); err == nil {
		s.saw(pid)
	}
	s.procs.KillAll()
	s.cmd.Wait()
}

// Pid returns the pid the pid file names: the ready generation's.
func (s *Service) Pid(t testing.TB) int {
	t.Helper()
	pid, err := readPid(s.PIDFile)
	if err != nil {
		t.Fatal(err)
	}
	s.saw(pid)
	return pid
}

// Install replaces the service's binary with bin, atomically, as a deploy
// tool does. The next upgrade runs it.
func (s *Service) Install(t testing.TB, bin string) {
	t.Helper()
	Install(t, bin, s.Bin)
}

// ErrNoUpgrade means the service was still the same process when Upgrade
// gave up: the upgrade failed (the service's log says why) or is slower
// than the timeout.
var ErrNoUpgrade = errors.New("upgradertest: the service was not upgraded")

// Upgrade sends SIGHUP to the serving generation and waits until a new
// process is ready (the pid file names it) and the old one has exited. It
// returns the new pid, or an error wrapping ErrNoUpgrade if the old process
// is still the service after timeout.
func (s *Service) Upgrade(t testing.TB, timeout time.Duration) (int, error) {
	t.Helper()
	old := s.Pid(t)
	// Opened before the signal: the wait is for this process even if it
	// exits and its pid is reused before the wait starts.
	p, err := pidfd.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP %d: %v", old, err)
	}
	// The old process exits only once its successor is ready and it has
	// drained; then the pid file names the successor.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = p.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, fmt.Errorf("%w: pid %d still serves after %v", ErrNoUpgrade, old, timeout)
	}
	if err != nil {
		t.Fatal(err)
	}
	pid, err := readPid(s.PIDFile)
	if err != nil || pid == old || syscall.Kill(pid, 0) != nil {
		return 0, fmt.Errorf("%w: pid %d exited and no new process took over", ErrNoUpgrade, old)
	}
	s.saw(pid)
	return pid, nil
}

// CheckUpgrades runs n upgrades, interval apart, under the load cfg
// describes (cfg.URL defaults to the service's), and fails the test if any
// upgrade failed or any request failed or had to be re-sent. It returns
// what the clients saw.
func CheckUpgrades(t testing.TB, s *Service, n int, interval time.Duration, cfg LoadConfig) *LoadReport {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = s.URL
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *LoadReport, 1)
	go func() { done <- RunLoad(ctx, cfg) }()
	var upgradeErr error
	tick := time.NewTicker(interval)
	for i := 0; i < n && upgradeErr == nil; i++ {
		<-tick.C
		_, upgradeErr = s.Upgrade(t, time.Minute)
	}
	tick.Stop()
	cancel()
	r := <-done
	if upgradeErr != nil {
		t.Errorf("upgrade failed: %v", upgradeErr)
	}
	if r.Requests == 0 {
		t.Error("upgradertest: the load sent no requests")
	}
	if r.Failed() != 0 || r.Retried != 0 {
		t.Errorf("upgradertest: %d failed and %d silently re-sent requests of %d over %d upgrades: %v %q",
			r.Failed(), r.Retried, r.Requests, n, r.Failures, r.Errors)
	}
	return r
}

// newClient returns a client that opens a new connection for every request.
func newClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}
