package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// serviceSpec is one of the services the benchmark compares.
type serviceSpec struct {
	Name string   `json:"name"`
	Bin  string   `json:"-"`
	Args []string `json:"args"`
	// Restart upgrades by stopping the process (SIGTERM, wait for its
	// exit) and starting it again on the same port, instead of SIGHUP.
	Restart bool `json:"restart"`
}

// service is a running service: every process the driver started for it
// and every generation those started, all writing to one log pipe.
type service struct {
	spec    serviceSpec
	dir     string
	pidFile string
	addr    string
	tr      *tracker
	logs    *upgradertest.Logs
	logR    *os.File
	logW    *os.File
	reaped  []chan struct{} // closed when a process the driver started was waited for
}

// startService starts spec's first process in a new directory under root
// on a free port of 127.0.0.1 and waits until it serves and is healthy.
func startService(spec serviceSpec, root string) (*service, error) {
	dir, err := os.MkdirTemp(root, spec.Name+"-")
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s := &service{spec: spec, dir: dir, pidFile: filepath.Join(dir, "service.pid"),
		tr: newTracker(spec.Bin), logs: upgradertest.ReadLogs(r), logR: r, logW: w}
	pid, err := s.spawn("127.0.0.1:0")
	if err != nil {
		s.stop()
		return nil, err
	}
	if s.addr, err = waitServing(s.logs, pid, time.Minute); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w\n%s", spec.Name, err, s.logs.Tail(20))
	}
	if err := waitHealthy(s.url(), 10*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	return s, nil
}

// spawn starts one process of the service on addr and returns its pid
// without waiting for it to serve.
func (s *service) spawn(addr string) (int, error) {
	args := append([]string{"-addr", addr, "-pidfile", s.pidFile}, s.spec.Args...)
	cmd := exec.Command(s.spec.Bin, args...)
	cmd.Dir = s.dir
	cmd.Env = upgradertest.CleanEnv()
	cmd.Stdout = s.logW
	cmd.Stderr = s.logW
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", s.spec.Name, err)
	}
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		cmd.Wait()
	}()
	s.reaped = append(s.reaped, reaped)
	pid := cmd.Process.Pid
	if !s.tr.add(pid) {
		// Our own child, not yet waited for: its pid cannot have been
		// reused.
		cmd.Process.Kill()
		return 0, fmt.Errorf("start %s: pid %d is not tracked", s.spec.Name, pid)
	}
	return pid, nil
}

func (s *service) url() string { return "http://" + s.addr }

// stop ends every process of the service and waits until they are gone and
// their log pipe is closed.
func (s *service) stop() error {
	s.tr.stop(5 * time.Second)
	var errs []error
	for _, r := range s.reaped {
		select {
		case <-r:
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("a started process was not reaped after 10s"))
		}
	}
	s.logW.Close()
	select {
	case <-s.logs.Done():
	case <-time.After(10 * time.Second):
		errs = append(errs, fmt.Errorf("%s: log pipe still open 10s after stop: an untracked process holds it", s.spec.Name))
	}
	s.logR.Close()
	s.tr.close()
	return errors.Join(errs...)
}

// waitHealthy polls GET /healthz until it answers 200.
func waitHealthy(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := c.Get(url + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s/healthz not 200 after %v", url, timeout)
}

// probeNew asks GET / on fresh connections, every interval, until a reply
// comes from a pid not in old, and returns that pid and when the reply
// arrived. Errors (a refused connection while a plain restart has no
// listener) are part of the wait.
func probeNew(ctx context.Context, url string, old map[int]bool, interval time.Duration) (int, time.Time, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/", nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			at := time.Now()
			pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
			if resp.StatusCode == http.StatusOK && pid > 0 && !old[pid] {
				return pid, at, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, fmt.Errorf("no reply from a new pid: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
