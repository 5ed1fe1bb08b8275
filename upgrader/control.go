package upgrader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"github.com/batonhq/baton/state"
)

// The control socket lets an operator (the baton command) ask a running
// service for its status and trigger an upgrade, and learn its outcome. It
// is a Unix stream socket taken through Listen, so it is handed over like
// any listener and keeps working at the same path across upgrades. The
// protocol is newline-delimited JSON, versioned by the "v" field of every
// message, and written down in state/PROTOCOL.md.
const (
	controlVersion = 1
	// maxControlRequest bounds a request line.
	maxControlRequest = 64 << 10
)

// ControlRequest is a request on the control socket.
type ControlRequest struct {
	Version int    `json:"v"`
	Command string `json:"cmd"` // "status" or "upgrade"
	// Wait, for "upgrade", streams the steps and answers once the upgrade
	// succeeded (the old process drained) or failed.
	Wait bool `json:"wait,omitempty"`
	// TimeoutMillis bounds the upgrade; zero means the upgrader's
	// UpgradeTimeout plus DrainTimeout.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
}

// ControlReply is one line of a reply on the control socket.
type ControlReply struct {
	Version int    `json:"v"`
	Type    string `json:"type"` // "event", "status", "result" or "error"
	// Pid is the pid of the process that answered. (SO_PEERCRED cannot
	// tell a client: on a socket handed between generations it names the
	// process that first called listen.)
	Pid    int     `json:"pid"`
	Event  *Event  `json:"event,omitempty"`
	Status *Status `json:"status,omitempty"`
	Result *Result `json:"result,omitempty"`
	// Code classifies an error: "bad_request", "forbidden", "busy",
	// "upgrade_failed", "version".
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// Status describes the running service.
type Status struct {
	Pid        int               `json:"pid"`
	Generation int               `json:"generation"`
	Build      state.Build       `json:"build"`
	Started    time.Time         `json:"started"`
	Uptime     time.Duration     `json:"uptime_ns"`
	Listeners  []ListenerInfo    `json:"listeners"`
	History    []Record          `json:"history"`
	Restored   *state.Info       `json:"restored,omitempty"`
	Sections   []state.Section   `json:"sections"`
	Components map[string]any    `json:"components,omitempty"`
	Counters   map[string]uint64 `json:"counters,omitempty"`
}

// AddStatus adds a component's status, such as task counts, to the status
// the control socket reports. f is called on every status request.
func (u *Upgrader) AddStatus(name string, f func() any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.statusFuncs == nil {
		u.statusFuncs = make(map[string]func() any)
	}
	u.statusFuncs[name] = f
}

// Status returns the service's status.
func (u *Upgrader) Status() Status {
	u.mu.Lock()
	funcs := make(map[string]func() any, len(u.statusFuncs))
	for k, f := range u.statusFuncs {
		funcs[k] = f
	}
	u.mu.Unlock()
	st := Status{
		Pid:        os.Getpid(),
		Generation: u.gen,
		Build:      u.reg.Build(),
		Started:    u.started,
		Uptime:     time.Since(u.started),
		Listeners:  u.Listeners(),
		History:    u.history.list(),
		Sections:   u.reg.Manifest().Sections,
		Counters:   u.counters.Values(),
	}
	if u.restored.Load() && u.restoreInfo.Bytes > 0 {
		info := u.restoreInfo
		st.Restored = &info
	}
	if len(funcs) > 0 {
		st.Components = make(map[string]any, len(funcs))
		for k, f := range funcs {
			st.Components[k] = f()
		}
	}
	return st
}

// listenControl takes the control socket: inherited from the previous
// generation, or created with mode 0600. A socket file left by a process
// that died is removed first, but one that answers is not.
func (u *Upgrader) listenControl(path string) (net.Listener, error) {
	if !u.tf.HasParent() {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process is serving it", path)
		} else if _, serr := os.Stat(path); serr == nil {
			os.Remove(path)
		}
	}
	ln, err := u.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// serveControl accepts control connections until ln is closed. The caller
// owns the goroutine.
func (u *Upgrader) serveControl(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.log.Error("control socket stopped", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			u.handleControl(c)
		}()
	}
}

func (u *Upgrader) handleControl(c net.Conn) {
	enc := json.NewEncoder(c)
	reply := func(r ControlReply) error {
		r.Version, r.Pid = controlVersion, os.Getpid()
		return enc.Encode(r)
	}
	fail := func(code, format string, args ...any) {
		reply(ControlReply{Type: "error", Code: code, Error: fmt.Sprintf(format, args...)})
	}
	if uid, pid, ok, err := peerAllowed(c); err != nil {
		u.log.Warn("control: cannot check the peer", "err", err)
		fail("forbidden", "cannot check your credentials: %v", err)
		return
	} else if !ok {
		u.log.Warn("control: refused a client of another user", "peer_uid", uid, "peer_pid", pid)
		fail("forbidden", "uid %d may not control this service: only root and uid %d may", uid, os.Getuid())
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The buffer holds a whole request: ReadSlice fails with ErrBufferFull
	// once a line outgrows it.
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxControlRequest+1), maxControlRequest+1).ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxControlRequest {
			fail("bad_request", "request longer than %d bytes", maxControlRequest)
		} else {
			fail("bad_request", "read request: %v", err)
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	req, code, err := parseControlRequest(line)
	if err != nil {
		fail(code, "%v", err)
		return
	}
	switch req.Command {
	case "status":
		st := u.Status()
		reply(ControlReply{Type: "status", Status: &st})
	case "upgrade":
		u.controlUpgrade(req, reply, fail)
	}
}

// maxControlTimeoutMillis is the largest timeout_ms that fits a
// time.Duration.
const maxControlTimeoutMillis = int64(math.MaxInt64 / time.Millisecond)

// parseControlRequest parses one request line. A request it accepts has
// this protocol version, a known command and a timeout that fits a
// time.Duration; otherwise it returns the reply's error code
// ("bad_request" or "version") and what is wrong.
func parseControlRequest(line []byte) (ControlRequest, string, error) {
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return ControlRequest{}, "bad_request", fmt.Errorf("request is not JSON: %v", err)
	}
	if req.Version != controlVersion {
		return ControlRequest{}, "version", fmt.Errorf("protocol version %d; this service speaks %d", req.Version, controlVersion)
	}
	if req.Command != "status" && req.Command != "upgrade" {
		return ControlRequest{}, "bad_request", fmt.Errorf("unknown command %q: want status or upgrade", req.Command)
	}
	if req.TimeoutMillis < 0 || req.TimeoutMillis > maxControlTimeoutMillis {
		return ControlRequest{}, "bad_request", fmt.Errorf("timeout_ms %d out of range 0 to %d", req.TimeoutMillis, maxControlTimeoutMillis)
	}
	return req, "", nil
}

func (u *Upgrader) controlUpgrade(req ControlRequest, reply func(ControlReply) error, fail func(code, format string, args ...any)) {
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = u.opts.UpgradeTimeout + u.opts.DrainTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !req.Wait {
		// Answer once the upgrade has started or was refused; the
		// upgrade carries on in the connection's goroutine, which
		// serveControl waits for.
		started := make(chan error, 1)
		go func() {
			_, err := u.upgradeWithEvents(context.WithoutCancel(ctx), func(e Event) {
				if e.Step == StepStarted {
					started <- nil
				}
			})
			started <- err
		}()
		if err := <-started; err != nil {
			fail(codeOf(err), "%v", err)
			return
		}
		reply(ControlReply{Type: "result", Result: &Result{}})
		return
	}
	res, err := u.upgradeWithEvents(ctx, func(e Event) {
		ev := e
		reply(ControlReply{Type: "event", Event: &ev})
	})
	if err != nil {
		fail(codeOf(err), "%v", err)
		return
	}
	reply(ControlReply{Type: "event", Event: &Event{Step: StepDraining}})
	select {
	case <-u.drained:
		reply(ControlReply{Type: "event", Event: &Event{Step: StepDone}})
	case <-ctx.Done():
		// The new process is serving; only the old one's drain is slow.
		reply(ControlReply{Type: "event", Event: &Event{Step: StepDone, Error: "old process still draining"}})
	}
	reply(ControlReply{Type: "result", Result: &res})
}

func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrUpgradeInProgress), errors.Is(err, ErrParentRunning),
		errors.Is(err, ErrNotReady), errors.Is(err, ErrUpgraded):
		return "busy"
	}
	return "upgrade_failed"
}
