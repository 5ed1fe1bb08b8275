package upgrader

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// session is the old process's side of the handoff for one attempt. Its
// serve loop is the only reader of the connection while it runs; the
// upgrade ends it by moving the read deadline into the past.
type session struct {
	u       *Upgrader
	ctx     context.Context // bounds the freeze and the send
	conn    handoffConn
	attempt int
	log     *slog.Logger
	events  func(Event)

	mu       sync.Mutex
	pid      int
	stepName string
	reject   string
	// Set by sendState.
	frozen     bool
	frozenAt   time.Time
	stateBytes int64
}

func (s *session) childPid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

func (s *session) step() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stepName == "" {
		return "start"
	}
	return s.stepName
}

func (s *session) rejected() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reject
}

// setReject records why the state did not change hands. The first reason
// is kept: once this process has refused or failed to send, what the new
// process says about the broken transfer is a consequence, not the cause.
func (s *session) setReject(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reject == "" {
		s.reject = reason
	}
}

func (s *session) setStep(step string) {
	s.mu.Lock()
	s.stepName = step
	s.mu.Unlock()
}

// drainStale discards messages left by the children of earlier attempts
// (one killed while it was saying hello, for example).
func (s *session) drainStale() {
	if err := s.conn.SetReadDeadline(time.Now()); err != nil {
		return
	}
	for {
		if _, _, err := s.conn.recv(nil); err != nil && isTimeout(err) {
			return
		} else if err != nil && !errors.Is(err, ErrHandshake) {
			return
		}
	}
}

// serve answers the new process until the connection's read deadline passes.
func (s *session) serve() {
	for {
		m, _, err := s.conn.recv(nil)
		if errors.Is(err, ErrHandshake) {
			s.log.Warn("handoff: bad message from new process", "err", err)
			continue
		}
		if err != nil {
			return // deadline passed or socket closed: the attempt is over
		}
		s.handle(m)
	}
}

// drainQueued reads what the new process sent before it died: its reason
// for rejecting the state, typically.
func (s *session) drainQueued() {
	for i := 0; i < 16; i++ {
		m, ok := s.conn.recvQueued()
		if !ok {
			return
		}
		if m.Type == msgStateRequest {
			continue // too late: the process is gone
		}
		s.handle(m)
	}
}

func (s *session) handle(m message) {
	if m.Attempt != 0 && m.Attempt != s.attempt {
		return // from an earlier attempt's child
	}
	{
		switch m.Type {
		case msgHello:
			s.mu.Lock()
			s.pid, s.stepName = m.Pid, "hello"
			s.mu.Unlock()
			s.log.Info("new process said hello", "child_pid", m.Pid)
			s.events(Event{Step: StepChildStarted, Pid: m.Pid})
		case msgStateRequest:
			s.setStep("state")
			frozen := s.sendState(s.ctx, m)
			s.mu.Lock()
			s.frozen = s.frozen || frozen
			s.mu.Unlock()
		case msgRestored:
			s.setStep("ready")
		case msgRejected:
			s.setReject(m.Reason)
			s.log.Warn("new process rejected the state", "reason", m.Reason)
		default:
			s.log.Warn("handoff: unexpected message", "type", m.Type)
		}
	}
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// classify maps an error from tableflip's Upgrade to a sentinel and the
// child's exit status. tableflip v1.2.3 formats its errors with %s, so the
// cause survives only as text; the mapping is pinned by the end-to-end tests
// that make a child exit, hang and fail to start.
func classify(err error) (reason error, exitStatus string) {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "can't start child"):
		return errors.Join(ErrStartFailed, err), ""
	case strings.Contains(msg, " timed out"):
		return ErrReadyTimeout, ""
	case strings.Contains(msg, " exited: "):
		return ErrChildExited, msg[strings.Index(msg, " exited: ")+len(" exited: "):]
	case strings.HasSuffix(msg, " exited"):
		return ErrChildExited, "exit status 0"
	case msg == "terminating":
		return ErrClosed, ""
	}
	return errors.Join(ErrChildExited, err), ""
}
