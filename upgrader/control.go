package upgrader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// message, and written down in upgrader/PROTOCOL.md.

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

// serveControl accepts control connections until ln is closed. The caller
// owns the goroutine; serveControl returns only once every goroutine it
// started has ended: each connection's, and each upgrade a connection
// started without waiting for it. release, which closes ln and stops any
// upgrade, waits for serveControl, so none outlives Shutdown or Close.
//
// Once ln is closed (the process stops or has handed over), a client still
// sending its request is cut off at once rather than at its read deadline:
// a client that connected and said nothing would otherwise hold the old
// process's exit for controlReadTimeout. Requests already read are
// answered; each reply line has controlWriteTimeout to be taken.
func (u *Upgrader) serveControl(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	reading := &controlReads{conns: make(map[net.Conn]struct{})}
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.log.Error("control socket stopped", "err", err)
			}
			reading.stop()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			u.handleControl(c, reading, &wg)
		}()
	}
}

// controlReads are the control connections still reading their request.
type controlReads struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
}

// begin arms c's read deadline for the request, unless the server has
// stopped: then it reports false. The deadline is set under the lock so
// that stop's cut-off cannot be overwritten by it.
func (r *controlReads) begin(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	c.SetReadDeadline(time.Now().Add(controlReadTimeout))
	r.conns[c] = struct{}{}
	return true
}

// end reports whether the request was read before the server stopped.
func (r *controlReads) end(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
	return !r.stopped
}

// stop ends every read in flight and refuses later ones.
func (r *controlReads) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	for c := range r.conns {
		c.SetReadDeadline(time.Unix(1, 0))
	}
}

// handleControl answers one connection. An upgrade that outlives the reply
// runs in a goroutine counted in wg.
func (u *Upgrader) handleControl(c net.Conn, reading *controlReads, wg *sync.WaitGroup) {
	enc := json.NewEncoder(c)
	reply := func(r ControlReply) error {
		r.Version, r.Pid = ControlVersion, os.Getpid()
		c.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
		return enc.Encode(r)
	}
	fail := func(code, format string, args ...any) {
		reply(ControlReply{Type: ReplyError, Code: code, Error: fmt.Sprintf(format, args...)})
	}
	if uid, pid, ok, err := peerAllowed(c); err != nil {
		u.log.Warn("control: cannot check the peer", "err", err)
		fail(CodeForbidden, "cannot check your credentials: %v", err)
		return
	} else if !ok {
		u.log.Warn("control: refused a client of another user", "peer_uid", uid, "peer_pid", pid)
		fail(CodeForbidden, "uid %d may not control this service: only root and uid %d may", uid, os.Getuid())
		return
	}
	stopping := func() {
		fail(CodeBusy, "this process is stopping or has handed over: retry, the control socket is served by its successor if there is one")
	}
	if !reading.begin(c) {
		stopping()
		return
	}
	// The buffer holds a whole request: ReadSlice fails with ErrBufferFull
	// once a line outgrows it.
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxControlRequest+1), maxControlRequest+1).ReadSlice('\n')
	if !reading.end(c) && err != nil {
		stopping()
		return
	}
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxControlRequest {
			fail(CodeBadRequest, "request longer than %d bytes", maxControlRequest)
		} else {
			fail(CodeBadRequest, "read request: %v", err)
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	if u.serveAddedCommand(c, line) {
		return
	}
	req, code, err := parseControlRequest(line)
	if err != nil {
		fail(code, "%v", err)
		return
	}
	switch req.Command {
	case CommandStatus:
		st := u.Status()
		reply(ControlReply{Type: ReplyStatus, Status: &st})
	case CommandUpgrade:
		u.controlUpgrade(req, reply, fail, wg)
	}
}

// controlUpgrade runs an upgrade for a request. Without Wait it answers as
// soon as the upgrade has started or was refused, and the upgrade carries on
// in a goroutine counted in wg; with Wait it streams the steps and answers
// once the upgrade failed or the old process drained.
func (u *Upgrader) controlUpgrade(req ControlRequest, reply func(ControlReply) error, fail func(code, format string, args ...any), wg *sync.WaitGroup) {
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = u.opts.UpgradeTimeout + u.opts.Probation + u.opts.DrainTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !req.Wait {
		// Answer once the upgrade has started or was refused; the
		// upgrade carries on in a goroutine of its own, which
		// serveControl waits for. (The connection closes after the
		// answer: the client reads until EOF.)
		started := make(chan error, 1)
		wg.Go(func() {
			_, err := u.upgradeWithEvents(context.WithoutCancel(ctx), func(e Event) {
				if e.Step == StepStarted {
					started <- nil
				}
			})
			started <- err
		})
		if err := <-started; err != nil {
			fail(codeOf(err), "%v", err)
			return
		}
		reply(ControlReply{Type: ReplyResult, Result: &Result{}})
		return
	}
	res, err := u.upgradeWithEvents(ctx, func(e Event) {
		ev := e
		reply(ControlReply{Type: ReplyEvent, Event: &ev})
	})
	if err != nil {
		fail(codeOf(err), "%v", err)
		return
	}
	reply(ControlReply{Type: ReplyEvent, Event: &Event{Step: StepDraining}})
	select {
	case <-u.drained:
		reply(ControlReply{Type: ReplyEvent, Event: &Event{Step: StepDone}})
	case <-ctx.Done():
		// The new process is serving; only the old one's drain is slow.
		reply(ControlReply{Type: ReplyEvent, Event: &Event{Step: StepDone, Error: "old process still draining"}})
	}
	reply(ControlReply{Type: ReplyResult, Result: &res})
}

// codeOf classifies an upgrade's error for the reply: CodeBusy when the
// upgrade was refused for what the process is doing now (a later trigger
// may succeed), CodeRolledBack when the new process failed its probation,
// CodeUpgradeFailed when it was tried and failed otherwise.
func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrUpgradeInProgress), errors.Is(err, ErrParentRunning),
		errors.Is(err, ErrNotReady), errors.Is(err, ErrUpgraded), errors.Is(err, ErrProbation):
		return CodeBusy
	case errors.Is(err, ErrRolledBack):
		return CodeRolledBack
	}
	return CodeUpgradeFailed
}
