package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/batonhq/baton/state"
	"golang.org/x/sys/unix"
)

// adoptParent reads BATON_HANDOFF, takes the handoff socket and says hello.
// A process started by an upgrade without the variable has a parent that is
// not baton: it starts with no state to receive. One whose variable or
// socket is unusable (broken, bound to another process, naming a socket it
// did not inherit) cannot receive the state its parent holds: handoffErr
// makes Restore, and so Ready, fail, and the parent keeps its state.
func (u *Upgrader) adoptParent(env string) {
	u.gen = 1
	if env == "" {
		u.log.Warn("started by an upgrade without " + envHandoff + ": the previous generation hands over no state")
		return
	}
	h, err := parseHandoffEnv(env)
	if err != nil {
		u.handoffErr = err
		u.log.Warn("started by an upgrade without a usable handoff", "err", err)
		return
	}
	if h.ParentPid != os.Getppid() {
		u.handoffErr = fmt.Errorf("%w: %s=%q is meant for a child of pid %d, and this process's parent is %d",
			ErrHandshake, envHandoff, env, h.ParentPid, os.Getppid())
		u.log.Warn("started by an upgrade without a usable handoff", "err", u.handoffErr)
		return
	}
	u.gen, u.parentPid, u.startAttempt = h.Generation, h.ParentPid, h.Attempt
	u.startID = fmt.Sprintf("%d-%d", h.ParentPid, h.Attempt)
	fault(faultNewStart, u.gen, u.startAttempt)
	name := handoffFileName + strconv.Itoa(h.Generation)
	f, err := u.tf.File(name)
	if err != nil || f == nil {
		u.handoffErr = fmt.Errorf("%w: handoff socket %s not inherited", ErrHandshake, name)
		if err != nil {
			u.handoffErr = fmt.Errorf("%w: handoff socket %s: %v", ErrHandshake, name, err)
		}
		u.log.Warn("handoff socket not inherited", "err", u.handoffErr)
		return
	}
	c, err := fileConn(f)
	if err != nil {
		u.handoffErr = fmt.Errorf("%w: handoff socket %s unusable: %v", ErrHandshake, name, err)
		u.log.Warn("handoff socket unusable", "err", u.handoffErr)
		return
	}
	if err := c.send(message{Type: msgHello, Pid: os.Getpid(), Attempt: h.Attempt}, nil); err != nil {
		u.handoffErr = fmt.Errorf("%w: hello: %v", ErrHandshake, err)
		u.log.Warn("handoff hello failed", "err", u.handoffErr)
		c.Close()
		return
	}
	u.parent = c
}

// Restore receives the state from the previous generation and restores the
// registry's participants, or, in a process that was not started by an
// upgrade, restores them from Options.StateFile if there is one. Call it
// after taking the listeners and before serving, so that no request sees the
// state half restored; Ready calls it if it has not been called. It is
// idempotent: later calls return the first result.
//
// If the state cannot be read or restored the error wraps ErrStateRejected:
// the process should exit without calling Ready, and the old process, which
// has been told, keeps serving with its state. If the old process dies
// before this one has the whole snapshot, nobody else serves: Restore
// restores Options.StateFile if there is one, or nothing, says so in the
// log, and succeeds.
func (u *Upgrader) Restore(ctx context.Context) (state.Info, error) {
	u.restoreOnce.Do(func() {
		u.restoreInfo, u.restoreErr = u.restore(ctx)
		u.restored.Store(true)
	})
	return u.restoreInfo, u.restoreErr
}

func (u *Upgrader) restore(ctx context.Context) (state.Info, error) {
	if u.parent.UnixConn == nil {
		if u.handoffErr != nil {
			// The parent holds state this process cannot receive:
			// becoming ready would drop it.
			return state.Info{}, fmt.Errorf("%w: started by an upgrade, but the state cannot be received: %w", ErrStateRejected, u.handoffErr)
		}
		if u.tf.HasParent() {
			return state.Info{}, nil // started by a parent that hands over no state
		}
		return u.restoreFile()
	}
	return u.receiveState(ctx)
}

// receiveState is the new side of the state half of the handoff: it asks
// the previous generation for the state, restores it and confirms it (or
// says why it rejects it). With a pre-copy, it restores the first round
// and confirms it first, and the snapshot that follows is the second.
func (u *Upgrader) receiveState(ctx context.Context) (state.Info, error) {
	fault(faultNewListening, u.gen, u.startAttempt)
	log := u.log.With("upgrade", u.startID)
	start := time.Now()
	c := u.parent
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	kind, conn, err := u.requestState(c, log)
	if err == nil && kind == msgPreState {
		conn, err = u.receivePreCopy(ctx, c, conn, log)
	}
	if err != nil && (errors.Is(err, errParentDied) || hungUp(err) && u.parentDied()) {
		return u.restoreOrphaned(log, err)
	}
	if err != nil || conn == nil {
		// The first round, if one was restored, goes with the rest.
		if derr := u.reg.DiscardPreCopy(); derr != nil {
			err = errors.Join(err, fmt.Errorf("%w: undoing the first round: %w", ErrStateRejected, derr))
		}
		return state.Info{}, err
	}
	info, err := state.Receive(ctx, conn, u.reg)
	conn.Close()
	if err != nil && ctx.Err() == nil && u.parentDied() {
		return u.restoreOrphaned(log, err)
	}
	if err == nil && faultRejects(u.gen, u.startAttempt) {
		err = errors.New("rejected by fault injection")
	}
	if err != nil {
		return info, u.reject(c, log, err)
	}
	if err := c.send(message{Type: msgRestored}, nil); err != nil {
		if !u.parentDied() {
			return info, fmt.Errorf("%w: confirming the restore: %v", ErrHandshake, err)
		}
		// The previous generation died after sending the whole
		// snapshot (it froze its participants for good when it did):
		// this process holds all the state and nobody else serves.
		// Ready carries on the same way.
		u.log.Warn("previous generation died before the restore was confirmed: this process carries on with the state it received", "err", err)
	}
	if u.metrics != nil {
		u.metrics.stateBytes.Set(float64(info.Bytes))
	}
	log.Info("state restored", "bytes", info.Bytes, "sections", len(info.Sections), "took", time.Since(start))
	return info, nil
}

// errParentDied marks a transfer cut short because the previous generation
// died: this process starts on its own (restoreOrphaned).
var errParentDied = errors.New("the previous generation died")

// reject tells the previous generation that this process cannot use the
// state (err), and returns the error Restore fails with.
func (u *Upgrader) reject(c handoffConn, log *slog.Logger, err error) error {
	if serr := c.send(message{Type: msgRejected, Reason: err.Error()}, nil); serr != nil {
		log.Warn("handoff: telling the previous generation failed", "err", serr)
	}
	return fmt.Errorf("%w: %w", ErrStateRejected, err)
}

// receivePreCopy restores the first round of a pre-copy from conn, and
// each middle round after it, the previous generation running meanwhile;
// confirms each ("pre-restored", with its round number); and waits for the
// last round, whose stream socket it returns. A round that fails to
// restore is rejected (the registry has undone every round); an error
// after one leaves it to receiveState to undo them.
func (u *Upgrader) receivePreCopy(ctx context.Context, c handoffConn, conn *net.UnixConn, log *slog.Logger) (*net.UnixConn, error) {
	for round := 1; ; round++ {
		start := time.Now()
		if round == 1 {
			fault(faultNewPreRestoring, u.gen, u.startAttempt)
		} else if round == 2 {
			fault(faultNewMiddleRestoring, u.gen, u.startAttempt)
		}
		info, err := state.ReceivePreCopy(ctx, conn, u.reg)
		conn.Close()
		if err != nil && ctx.Err() == nil && u.parentDied() {
			return nil, fmt.Errorf("%w: %w", errParentDied, err)
		}
		if err != nil {
			return nil, u.reject(c, log, err)
		}
		log.Info("pre-copy restored", "round", round, "bytes", info.Bytes, "sections", len(info.Sections), "took", time.Since(start))
		if err := c.send(message{Type: msgPreRestored, Round: round}, nil); err != nil {
			return nil, fmt.Errorf("%w: confirming the pre-copy: %w", ErrHandshake, err)
		}
		var kind string
		kind, conn, err = u.awaitState(c, log, round+1)
		switch {
		case err != nil:
			return nil, err
		case kind == msgState:
			return conn, nil
		case kind != msgPreState:
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("%w: %q message after the pre-copy, want %q or %q", ErrHandshake, kind, msgPreState, msgState)
		}
	}
}

// hungUp reports whether err says the peer's end of the handoff socket is
// closed: every process holding it has exited.
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// restoreOrphaned starts a process whose previous generation died during
// the handoff before this one had the whole snapshot: killed after it froze
// its participants (the OOM killer, SIGKILL), or in the middle of the send.
// Nobody else serves and nobody will send the state, so this process must
// not exit with the listeners in hand. It restores the last durable
// snapshot, Options.StateFile, if there is one: no newer snapshot can exist,
// since the only newer one is the one that was never sent (what the dead
// process did since the file was written is lost, and task runs since then
// run again). Without a state file it starts with no state, as a first
// start does. Either way it says so.
func (u *Upgrader) restoreOrphaned(log *slog.Logger, cause error) (state.Info, error) {
	// A first round restored before the death is not the state either.
	if err := u.reg.DiscardPreCopy(); err != nil {
		return state.Info{}, fmt.Errorf("%w: undoing the first round of the pre-copy: %w", ErrStateRejected, err)
	}
	if u.opts.StateFile != "" {
		log.Warn("previous generation died before handing over its state: restoring the state file",
			"path", u.opts.StateFile, "err", cause)
		return u.restoreFile()
	}
	log.Warn("previous generation died before handing over its state: starting with no state", "err", cause)
	return state.Info{}, nil
}

// requestState sends the state request, saying which versions this binary
// reads (and which sections it takes in rounds), and waits for the
// answer (awaitState).
func (u *Upgrader) requestState(c handoffConn, log *slog.Logger) (string, *net.UnixConn, error) {
	accepts := u.reg.Accepts()
	if err := c.send(message{Type: msgStateRequest, Accepts: &accepts}, nil); err != nil {
		return "", nil, fmt.Errorf("%w: asking for the state: %w", ErrHandshake, err)
	}
	return u.awaitState(c, log, 1)
}

// awaitState waits for the previous generation's answer about the state:
// msgState or msgPreState (of the round expected) with the stream socket
// the snapshot or a round of it comes on, or msgNoState and no socket if
// it hands over no state. Every file that came with the answer and is not
// returned is closed.
func (u *Upgrader) awaitState(c handoffConn, log *slog.Logger, round int) (string, *net.UnixConn, error) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	m, oobn, err := c.recv(oob)
	files := rights(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return "", nil, fmt.Errorf("%w: waiting for the state: %w", ErrHandshake, err)
	}
	switch m.Type {
	case msgNoState:
		u.readyGate = m.ReadyGate
		log.Info("previous generation handed over no state")
		return m.Type, nil, nil
	case msgRefused:
		return "", nil, fmt.Errorf("%w: the previous generation refused: %s", ErrStateRejected, m.Reason)
	case msgState:
		u.readyGate = m.ReadyGate
	case msgPreState:
		if m.Round != round {
			return "", nil, fmt.Errorf("%w: pre-copy round %d, want %d", ErrHandshake, m.Round, round)
		}
	default:
		return "", nil, fmt.Errorf("%w: unexpected %q message", ErrHandshake, m.Type)
	}
	if len(files) != 1 {
		return "", nil, fmt.Errorf("%w: %s message with %d files", ErrHandshake, m.Type, len(files))
	}
	conn, err := fileUnixConn(files[0])
	files = nil // fileUnixConn closed it
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s socket: %v", ErrHandshake, m.Type, err)
	}
	return m.Type, conn, nil
}

// readFinalStream reads the final counts that did not fit a datagram from
// the stream socket that came with the message: exactly size bytes of JSON.
// It closes every file.
func readFinalStream(files []*os.File, size int64) (map[string]uint64, error) {
	if len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("%w: final message of %d bytes with %d files, want 1", ErrHandshake, size, len(files))
	}
	conn, err := fileUnixConn(files[0])
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(finalTimeout))
	b, err := io.ReadAll(io.LimitReader(conn, size))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%w: final counts: %d of %d bytes", ErrHandshake, len(b), size)
	}
	var counts map[string]uint64
	if err := json.Unmarshal(b, &counts); err != nil {
		return nil, fmt.Errorf("%w: final counts: %v", ErrHandshake, err)
	}
	return counts, nil
}

// rights returns the files passed in a control message, so that every one
// of them is closed even if the message is unexpected.
func rights(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "baton-handoff-rights"))
		}
	}
	return files
}

// parentDied reports whether the previous generation is gone, waiting a
// moment for tableflip to notice.
func (u *Upgrader) parentDied() bool {
	select {
	case <-u.parentGone:
		return true
	case <-time.After(time.Second):
		return os.Getppid() != u.parentPid
	}
}

// awaitFinal runs in the new process after Ready until the previous
// generation has sent its final counts or is gone.
func (u *Upgrader) awaitFinal(c handoffConn) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		m, oobn, err := c.recv(oob)
		files := rights(oob[:oobn])
		if m.Type == msgFinal && err == nil && m.Size > 0 {
			m.Counters, err = readFinalStream(files, m.Size)
			files = nil // readFinalStream closed them
			if err != nil {
				u.log.Warn("handoff: reading the final counts failed", "err", err, "bytes", m.Size)
				return
			}
		}
		for _, f := range files {
			f.Close()
		}
		if errors.Is(err, ErrHandshake) {
			u.log.Warn("handoff: bad message while waiting for the final counts", "err", err)
			continue
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.log.Warn("handoff: previous generation gone without final counts", "err", err)
			}
			return
		}
		if m.Type != msgFinal {
			u.log.Warn("handoff: unexpected message while waiting for the final counts", "type", m.Type)
		}
		if m.Type == msgFinal {
			u.counters.add(m.Counters)
			u.observeFinal(m)
			u.log.Info("final counts received from the previous generation", "counters", len(m.Counters))
			return
		}
	}
}

// observeFinal records in this process's histograms the upgrade that
// started it and the previous generation's drain, as the final message
// says.
func (u *Upgrader) observeFinal(m message) {
	if u.metrics == nil {
		return
	}
	if m.UpgradeNanos > 0 {
		u.metrics.duration.Observe(time.Duration(m.UpgradeNanos).Seconds())
	}
	if m.DrainNanos > 0 {
		u.metrics.drainDuration.Observe(time.Duration(m.DrainNanos).Seconds())
	}
}

// askReady asks the previous generation, if it offered the ready gate,
// whether this process may become ready, and waits for the answer. It
// returns nil on go, and also when the previous generation has died (nobody
// else serves: this process carries on, as Ready does when the ready byte
// finds no reader); an error wrapping ErrUpgradeCalledOff on abort.
func (u *Upgrader) askReady() error {
	c := u.parent
	if !u.readyGate || c.UnixConn == nil {
		return nil
	}
	err := c.send(message{Type: msgReadyRequest, Attempt: u.startAttempt}, nil)
	for err == nil {
		var m message
		m, _, err = c.recv(nil)
		switch {
		case errors.Is(err, ErrHandshake):
			u.log.Warn("handoff: bad message while waiting for the ready answer", "err", err)
			err = nil
		case err != nil:
		case m.Type == msgReadyGo:
			u.probation = time.Duration(m.ProbationMillis) * time.Millisecond
			return nil
		case m.Type == msgReadyAbort:
			return fmt.Errorf("%w: the previous generation's deadline passed before this process was ready", ErrUpgradeCalledOff)
		default:
			u.log.Warn("handoff: unexpected message while waiting for the ready answer", "type", m.Type)
		}
	}
	if hungUp(err) && u.parentDied() {
		u.log.Warn("previous generation died before answering the ready request: this process carries on", "err", err)
		return nil
	}
	return fmt.Errorf("%w: waiting for the ready answer: %w", ErrHandshake, err)
}
