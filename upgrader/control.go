package upgrader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
)

// The control socket lets an operator (the baton command) ask a running
// service for its status and trigger an upgrade, and learn its outcome. It
// is a Unix stream socket taken through Listen, so it is handed over like
// any listener and keeps working at the same path across upgrades. The
// protocol is newline-delimited JSON, versioned by the "v" field of every
// message, and written down in upgrader/PROTOCOL.md.

// ControlVersion is the control protocol's version: the "v" field of every
// request and reply. A request of another version is answered with
// CodeVersion.
const ControlVersion = 1

// maxControlRequest bounds a request line.
const maxControlRequest = 64 << 10

// Deadlines of a control connection, so that no client, silent or not
// reading, holds a goroutine of the control server, and so the process's
// exit, for longer.
const (
	controlReadTimeout  = 10 * time.Second // to send the request line
	controlWriteTimeout = 5 * time.Second  // to take each reply line
)

// Commands of a ControlRequest.
const (
	CommandStatus  = "status"  // reply: one ReplyStatus
	CommandUpgrade = "upgrade" // reply: ReplyEvent lines if Wait, then ReplyResult or ReplyError
)

// Types of a ControlReply: what the line carries.
const (
	ReplyEvent  = "event"  // Event: one step of an upgrade, with Wait
	ReplyStatus = "status" // Status: the answer to CommandStatus
	ReplyResult = "result" // Result: the upgrade started (no Wait) or succeeded (Wait)
	ReplyError  = "error"  // Code and Error: the request failed
)

// Codes of a ControlReply of type ReplyError.
const (
	CodeBadRequest    = "bad_request"    // the request is not one this service accepts
	CodeVersion       = "version"        // the request speaks another ControlVersion
	CodeForbidden     = "forbidden"      // the client's user may not control this service
	CodeBusy          = "busy"           // not now: not ready, upgrading, upgraded, or the previous generation still drains
	CodeUpgradeFailed = "upgrade_failed" // the upgrade was tried and failed; the old process serves on
)

// ControlRequest is a request on the control socket.
type ControlRequest struct {
	Version int    `json:"v"`
	Command string `json:"cmd"` // CommandStatus or CommandUpgrade
	// Wait, for CommandUpgrade, streams the steps and answers once the upgrade
	// succeeded (the old process drained) or failed.
	Wait bool `json:"wait,omitempty"`
	// TimeoutMillis bounds the upgrade; zero means the upgrader's
	// UpgradeTimeout plus DrainTimeout.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
}

// ControlReply is one line of a reply on the control socket.
type ControlReply struct {
	Version int    `json:"v"`
	Type    string `json:"type"` // ReplyEvent, ReplyStatus, ReplyResult or ReplyError
	// Pid is the pid of the process that answered. (SO_PEERCRED cannot
	// tell a client: on a socket handed between generations it names the
	// process that first called listen.)
	Pid    int     `json:"pid"`
	Event  *Event  `json:"event,omitempty"`
	Status *Status `json:"status,omitempty"`
	Result *Result `json:"result,omitempty"`
	// Code classifies an error: one of the Code constants.
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
// generation, or created with mode 0600 (see prepareControlPath).
func (u *Upgrader) listenControl(path string) (net.Listener, error) {
	if !u.tf.HasParent() {
		if err := u.prepareControlPath(path); err != nil {
			return nil, err
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

// prepareControlPath checks that a control socket may be created at path,
// and removes what is there only if it is a socket nobody answers on (left
// by a process that died). It refuses a directory that others can write or
// that belongs to another user (who could take the path first, or swap the
// file between the check and the removal) and anything at the path that is
// not a socket, or a socket that is served or cannot be tried.
func (u *Upgrader) prepareControlPath(path string) error {
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrControlSocket, path, err)
	}
	if perm := di.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s: its directory %s is writable by other users (mode %04o), who could take the path first: "+
			"put the socket in a directory only its owner can write, such as a RuntimeDirectory under /run", ErrControlSocket, path, dir, uint32(perm))
	}
	if st, ok := di.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%w: %s: its directory %s belongs to uid %d, who could replace the socket: "+
			"put it in a directory of this user (uid %d) or root", ErrControlSocket, path, dir, st.Uid, os.Getuid())
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %w", ErrControlSocket, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%w: %s exists and is not a socket (%s): refusing to replace it; remove it or choose another path",
			ErrControlSocket, path, fileKind(fi.Mode()))
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s: another process is serving it", ErrControlSocket, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %s: cannot tell whether a process serves it: %w", ErrControlSocket, path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("%w: removing the stale socket: %w", ErrControlSocket, err)
	}
	u.log.Info("removed a stale control socket that nobody answered on", "path", path)
	return nil
}

// fileKind names what a file mode describes, for an error message.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// DialControl connects to the control socket at path, as a client such as
// the baton command does, and checks who serves it before anything is sent:
// a server that is neither this user nor root (another user who took the
// path first) is refused with ErrControlServer, and nothing is sent.
// SO_PEERCRED gives the credentials of the process that called listen: on a
// socket handed over across upgrades, the first generation, which runs as
// the same user as the others.
func DialControl(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	uid, pid, ok, err := peerAllowed(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot check who serves %s: %w", path, err)
	}
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: %s is served by uid %d (pid %d), not by you (uid %d) or root", ErrControlServer, path, uid, pid, os.Getuid())
	}
	return c, nil
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

// maxControlTimeoutMillis is the largest timeout_ms that fits a
// time.Duration.
const maxControlTimeoutMillis = int64(math.MaxInt64 / time.Millisecond)

// parseControlRequest parses one request line. A request it accepts has
// this protocol version, a known command and a timeout that fits a
// time.Duration; otherwise it returns the reply's error code
// (CodeBadRequest or CodeVersion) and what is wrong.
func parseControlRequest(line []byte) (ControlRequest, string, error) {
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("request is not JSON: %v", err)
	}
	if req.Version != ControlVersion {
		return ControlRequest{}, CodeVersion, fmt.Errorf("protocol version %d; this service speaks %d", req.Version, ControlVersion)
	}
	if req.Command != CommandStatus && req.Command != CommandUpgrade {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("unknown command %q: want status or upgrade", req.Command)
	}
	if req.TimeoutMillis < 0 || req.TimeoutMillis > maxControlTimeoutMillis {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("timeout_ms %d out of range 0 to %d", req.TimeoutMillis, maxControlTimeoutMillis)
	}
	return req, "", nil
}

// controlUpgrade runs an upgrade for a request. Without Wait it answers as
// soon as the upgrade has started or was refused, and the upgrade carries on
// in a goroutine counted in wg; with Wait it streams the steps and answers
// once the upgrade failed or the old process drained.
func (u *Upgrader) controlUpgrade(req ControlRequest, reply func(ControlReply) error, fail func(code, format string, args ...any), wg *sync.WaitGroup) {
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = u.opts.UpgradeTimeout + u.opts.DrainTimeout
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
// may succeed), CodeUpgradeFailed when it was tried and failed.
func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrUpgradeInProgress), errors.Is(err, ErrParentRunning),
		errors.Is(err, ErrNotReady), errors.Is(err, ErrUpgraded):
		return CodeBusy
	}
	return CodeUpgradeFailed
}
