package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	faults "github.com/batonhq/baton/internal/fault"
	"github.com/batonhq/baton/state"
	"golang.org/x/sys/unix"
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
	// committed: the new process was told it may become ready; aborted:
	// the attempt was called off before that. At most one is set.
	committed, aborted bool
	// Set by sendState.
	frozen     bool
	frozenAt   time.Time
	stateBytes int64
	// Set by sendPreCopy and sendMiddleRound: the reader's accepts, for
	// the last round; whether the first round went (preCopied) and a
	// round awaits "pre-restored" (preAwaited); the rounds sent while
	// running (first and middle: preRounds), their bytes in all
	// (preBytes); the last one's bytes, the one's before it, and when the
	// last one's send began, for the decision after it (nextRound).
	accepts              state.Accepts
	preCopied            bool
	preAwaited           bool
	preRounds            int
	preBytes             int64
	lastRound, prevRound int64
	roundStart           time.Time

	// The probation: serving closes when the new process says it serves
	// on probation; rollback says why it failed (nil: it did not);
	// timedOut, that the session's deadline killed the new process before
	// it served.
	serving     chan struct{}
	servingOnce sync.Once
	rollback    error
	timedOut    bool
}

// setRollback records why the probation failed, and reports whether it
// was the first reason.
func (s *session) setRollback(reason error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rollback != nil {
		return false
	}
	s.rollback = reason
	return true
}

func (s *session) rolledBack() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rollback
}

// granted reports whether the new process was allowed to become ready on
// probation: from then on a failure is a rollback.
func (s *session) granted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed && s.u.opts.Probation > 0
}

// onProbation reports whether the new process said it serves on probation.
func (s *session) onProbation() bool {
	select {
	case <-s.serving:
		return true
	default:
		return false
	}
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
		if m.Type == msgStateRequest || m.Type == msgPreRestored || m.Type == msgReadyRequest {
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
			s.answerStateRequest(s.ctx, m)
		case msgPreRestored:
			s.mu.Lock()
			awaited := s.preAwaited && m.Round == s.preRounds
			if awaited {
				s.preAwaited = false
			}
			round, n, prev, took := s.preRounds, s.lastRound, s.prevRound, time.Since(s.roundStart)
			s.mu.Unlock()
			if !awaited {
				s.log.Warn("handoff: unexpected message", "type", m.Type, "round", m.Round)
				return
			}
			again := nextRound(round, n, prev, took)
			s.log.Info("new process restored the pre-copy", "round", round, "bytes", n, "round_took", took, "another_round", again)
			if again {
				s.sendMiddleRound(s.ctx)
				return
			}
			s.sendState(s.ctx)
		case msgRestored:
			s.setStep("ready")
		case msgReadyRequest:
			s.answerReady()
		case msgServing:
			s.setStep("probation")
			s.servingOnce.Do(func() { close(s.serving) })
		case msgRejected:
			s.setReject(m.Reason)
			s.log.Warn("new process rejected the state", "reason", m.Reason)
		default:
			s.log.Warn("handoff: unexpected message", "type", m.Type)
		}
	}
}

// answerReady decides the attempt when the new process asks to become
// ready: go, unless the caller's deadline has already passed (then abort).
// The decision and callOff's are taken under the same lock, so the new
// process is never killed after it was allowed to become ready, and never
// becomes ready after the attempt was called off.
func (s *session) answerReady() {
	s.mu.Lock()
	if s.aborted || s.ctx.Err() != nil {
		s.aborted = true
	} else {
		s.committed = true
	}
	reply := msgReadyGo
	if s.aborted {
		reply = msgReadyAbort
	}
	s.mu.Unlock()
	m := message{Type: reply, Attempt: s.attempt}
	if reply == msgReadyGo && s.u.opts.Probation > 0 {
		// From here on the upgrade is on probation: whatever ends it
		// before the commit is a rollback.
		m.ProbationMillis = max(s.u.opts.Probation.Milliseconds(), 1)
		s.setStep("probation")
	}
	s.log.Info("new process asks to become ready", "answer", reply)
	if err := s.conn.send(m, nil); err != nil {
		s.log.Warn("handoff: answering the ready request failed", "err", err)
	}
}

// callOff ends the attempt when the caller's context is done: it reports
// false if the new process was already allowed to become ready (the attempt
// can no longer be called off), else it marks the attempt aborted, so that
// a ready request that comes later is refused.
func (s *session) callOff() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed {
		return false
	}
	s.aborted = true
	return true
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// answerStateRequest answers a state request on the old side: it refuses a
// new process that cannot read the state; else it sends the first round of
// a pre-copy if one is worth it, and the whole state otherwise.
func (s *session) answerStateRequest(ctx context.Context, req message) {
	u := s.u
	var accepts state.Accepts
	if req.Accepts != nil {
		accepts = *req.Accepts
	}
	if err := u.reg.CheckReadable(accepts); err != nil {
		s.refuse(fmt.Sprintf("the new binary cannot read this process's state: %v", err))
		return
	}
	s.mu.Lock()
	s.accepts = accepts
	s.mu.Unlock()
	sections, err := u.reg.PreCopySections(accepts)
	if err != nil {
		s.notePanic(err)
		s.refuse(err.Error())
		return
	}
	if len(sections) > 0 {
		s.sendPreCopy(ctx, sections)
		return
	}
	s.sendState(ctx)
}

// sendPreCopy sends the first round of a pre-copy, the participants
// running: a "pre-state" message with a fresh stream socket, the round on
// it. The new process answers "pre-restored", and sendState follows, or
// "rejected", or dies; the upgrade's end stops the tracking
// (endFreeze).
func (s *session) sendPreCopy(ctx context.Context, sections []string) {
	s.mu.Lock()
	s.preCopied = true
	accepts := s.accepts
	s.mu.Unlock()
	s.sendRound(1, faultOldKillAfterPreCopy, func(c *net.UnixConn) (int64, error) {
		n, err := state.SendPreCopy(ctx, c, s.u.reg, accepts, sections)
		if err != nil {
			s.sendFailed(ctx, "the pre-copy", "the first round of its state", err)
		}
		return n, err
	}, "sections", sections)
}

// sendRound offers the new process a fresh stream socket for round (1,
// the first, or a middle one) in a "pre-state" message, sends the round on
// it with send, which reports its own failure, and awaits the
// "pre-restored"; after it, the fault step step. logArgs go to the log line.
func (s *session) sendRound(round int, step faults.Step, send func(*net.UnixConn) (int64, error), logArgs ...any) {
	start := time.Now()
	mine := s.offerSocket(message{Type: msgPreState, Round: round})
	if mine == nil {
		return
	}
	defer mine.Close()
	n, err := send(mine)
	if err != nil {
		return
	}
	s.sentRound(start, n)
	s.log.Info("pre-copy sent", append([]any{"round", round, "bytes", n}, append(logArgs, "took", time.Since(start))...)...)
	fault(step, s.u.gen, s.attempt)
}

// The decision after each round sent while running (nextRound), by
// measurement (BENCHMARKS.md, "Scale: tasks"): the last round, after the
// freeze, holds what changed during the round before it, so another round
// while running pays when that round was not small and the rounds shrink.
const (
	// maxMiddleRounds is the most middle rounds after the first: each
	// costs a round trip and the time to restore it, and a state that
	// changes as fast as it moves converges no further.
	maxMiddleRounds = 4
	// smallRound is the size of a round below which the next is the
	// last: sending and restoring 64 KiB takes a few milliseconds.
	smallRound = 64 << 10
	// quickRound is the time from a round's send to its "pre-restored"
	// below which the next is the last: it holds what changed in that
	// time only.
	quickRound = 5 * time.Millisecond
)

// nextRound reports whether another middle round should follow round
// (1 is the first) of n bytes, the round before it of prev bytes (0 for
// the first), which took took from its send to its "pre-restored": not
// after maxMiddleRounds middle rounds, not after a small or quick round
// (the last round will be small too), and not unless the round shrank to
// less than 4/5 of the one before (it does not converge: another round
// would cost what this one did).
func nextRound(round int, n, prev int64, took time.Duration) bool {
	switch {
	case round > maxMiddleRounds:
		return false
	case n <= smallRound || took <= quickRound:
		return false
	case round > 1 && n*5 >= prev*4:
		return false
	}
	return true
}

// sentRound records that a round of n bytes went, its send begun at start,
// and awaits its "pre-restored".
func (s *session) sentRound(start time.Time, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preRounds++
	s.preAwaited, s.preBytes = true, s.preBytes+n
	s.prevRound, s.lastRound, s.roundStart = s.lastRound, n, start
}

// sendMiddleRound sends a middle round of a pre-copy, the participants
// running: a "pre-state" message with its round number and a fresh stream
// socket, on it what changed since the round before (state.SendPreCopyDelta).
// As after the first round, "pre-restored" or the end of the attempt
// follows.
func (s *session) sendMiddleRound(ctx context.Context) {
	s.mu.Lock()
	round := s.preRounds + 1
	s.mu.Unlock()
	s.sendRound(round, faultOldKillAfterMiddleRound, func(c *net.UnixConn) (int64, error) {
		n, err := state.SendPreCopyDelta(ctx, c, s.u.reg)
		if err != nil {
			s.sendFailed(ctx, "a middle round of the pre-copy", "a middle round of its state", err)
		}
		return n, err
	})
}

// sendState freezes the participants and sends the snapshot: all of it, or,
// after a first round, the second (state.SendFor writes the deltas).
func (s *session) sendState(ctx context.Context) {
	u := s.u
	s.mu.Lock()
	accepts := s.accepts
	s.mu.Unlock()
	start := time.Now()
	u.stateMu.Lock()
	err := u.reg.Freeze(ctx)
	u.stateMu.Unlock()
	if err != nil {
		s.notePanic(err)
		s.refuse(fmt.Sprintf("freeze: %v", err))
		return
	}
	s.mu.Lock()
	s.frozen, s.frozenAt = true, start
	s.mu.Unlock()
	s.log.Info("participants frozen", "took", time.Since(start))
	fault(faultOldKillAfterFreeze, u.gen, s.attempt)

	mine := s.offerSocket(message{Type: msgState, ReadyGate: true})
	if mine == nil {
		return
	}
	defer mine.Close()
	// SendFor, not Send: a new process of an older release (a rollback)
	// gets each section at the version it reads, migrated down.
	n, err := state.SendFor(ctx, mine, u.reg, accepts)
	if err != nil {
		s.sendFailed(ctx, "the snapshot", "its state", err)
		return
	}
	s.mu.Lock()
	s.stateBytes = n
	s.mu.Unlock()
	s.log.Info("state sent", "bytes", n, "capture_and_send", time.Since(start))
	s.events(Event{Step: StepStateSent, Bytes: n})
	fault(faultOldKill, u.gen, s.attempt)
}

// sendFailed reports that sending what (for the log; reason, for the
// upgrade's error) failed with err. If this process could not produce it
// (too large, a Capture failed), that is the reason the upgrade fails, not
// the new process's "unexpected EOF"; not so for a timeout or the new
// process dying, which the upgrade reports as such.
func (s *session) sendFailed(ctx context.Context, what, reason string, err error) {
	s.notePanic(err)
	s.log.Warn("handoff: sending "+what+" failed", "err", err)
	if ctx.Err() == nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		s.setReject(fmt.Sprintf("this process could not send %s: %v", reason, err))
	}
}

// offerSocket sends m with one end of a fresh stream socket pair, on which
// the state (or its first round) follows, and returns the other end; nil if
// it could not, having refused or logged why.
func (s *session) offerSocket(m message) *net.UnixConn {
	mine, theirs, err := streamPair()
	if err != nil {
		s.refuse(fmt.Sprintf("socket pair: %v", err))
		return nil
	}
	err = s.conn.send(m, unix.UnixRights(int(theirs.Fd())))
	theirs.Close()
	if err != nil {
		mine.Close()
		s.log.Warn("handoff: sending the "+m.Type+" socket failed", "err", err)
		return nil
	}
	return mine
}

// notePanic names the participant whose callback panicked as the step the
// upgrade failed at ("state:<participant>"), so that the failure, its
// metric and the history say whose bug it was.
func (s *session) notePanic(err error) {
	var pe *state.PanicError
	if errors.As(err, &pe) {
		s.setStep("state:" + pe.Participant)
		s.log.Error("handoff: a participant panicked; the upgrade fails and this process carries on",
			"participant", pe.Participant, "callback", pe.Callback, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
	}
}

func (s *session) refuse(reason string) {
	s.setReject(reason)
	s.log.Warn("handoff: refusing to hand over state", "reason", reason)
	if err := s.conn.send(message{Type: msgRefused, Reason: reason}, nil); err != nil {
		s.log.Warn("handoff: reply failed", "err", err)
	}
}

// finalTimeout bounds sending the final counts on a stream, and receiving
// them: the old process's exit waits for it.
const finalTimeout = 5 * time.Second

// sendFinal sends the new process what the counters counted after the
// capture: the old process calls it once it has drained. The counts are
// state, whatever their size: those that do not fit one datagram go on a
// stream socket of their own, as the snapshot does. With them go how long
// the upgrade and the drain took, for the new process's histograms.
func (u *Upgrader) sendFinal(drain time.Duration) {
	counts := u.counters.sinceCapture()
	u.mu.Lock()
	took := u.upgradeTook
	u.mu.Unlock()
	m := message{Type: msgFinal, Counters: counts, UpgradeNanos: int64(took), DrainNanos: int64(drain)}
	var err error
	if _, encErr := encodeMessage(m); encErr == nil {
		err = u.own.send(m, nil)
	} else {
		m.Counters = nil
		err = u.sendFinalStream(m, counts)
	}
	if err != nil {
		u.log.Warn("handoff: sending the final counts failed", "err", err)
		return
	}
	u.log.Info("final counts sent to the new process", "counters", len(counts))
}

// sendFinalStream sends a "final" message whose size field gives the length
// of the counts' JSON, which follows on a stream socket passed with it.
func (u *Upgrader) sendFinalStream(m message, counts map[string]uint64) error {
	b, err := json.Marshal(counts)
	if err != nil {
		return err
	}
	mine, theirs, err := streamPair()
	if err != nil {
		return err
	}
	defer mine.Close()
	m.Size = int64(len(b))
	err = u.own.send(m, unix.UnixRights(int(theirs.Fd())))
	theirs.Close()
	if err != nil {
		return err
	}
	mine.SetWriteDeadline(time.Now().Add(finalTimeout))
	if _, err := mine.Write(b); err != nil {
		return fmt.Errorf("final counts stream: %w", err)
	}
	return nil
}
