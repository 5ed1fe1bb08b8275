package upgrader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/batonhq/baton/state"
	"golang.org/x/sys/unix"
)

// The state half of the handoff. The new process finishes its own start-up,
// then asks for the state, saying which versions it reads. Only then does
// the old process check that it can be read, freeze its participants (the
// gap in background work starts here), capture and send the snapshot over a
// fresh stream socket pair whose end travels with the "state" message. The
// new process restores and reports "restored" (or "rejected"), then ready.
// If it is not ready in the end, the old process thaws; once it is ready the
// old process never thaws again.

// sendState answers a state request on the old side. It returns whether the
// participants are now frozen.
func (s *session) sendState(ctx context.Context, req message) (frozen bool) {
	u := s.u
	var accepts state.Accepts
	if req.Accepts != nil {
		accepts = *req.Accepts
	}
	if err := u.reg.CheckReadable(accepts); err != nil {
		s.refuse(fmt.Sprintf("the new binary cannot read this process's state: %v", err))
		return false
	}
	start := time.Now()
	u.stateMu.Lock()
	err := u.reg.Freeze(ctx)
	u.stateMu.Unlock()
	if err != nil {
		s.refuse(fmt.Sprintf("freeze: %v", err))
		return false
	}
	s.mu.Lock()
	s.frozenAt = start
	s.mu.Unlock()
	s.log.Info("participants frozen", "took", time.Since(start))

	mine, theirs, err := streamPair()
	if err != nil {
		s.refuse(fmt.Sprintf("socket pair: %v", err))
		return true
	}
	defer mine.Close()
	err = s.conn.send(message{Type: msgState}, unix.UnixRights(int(theirs.Fd())))
	theirs.Close()
	if err != nil {
		s.log.Warn("handoff: sending the state socket failed", "err", err)
		return true
	}
	n, err := state.Send(ctx, mine, u.reg)
	if err != nil {
		s.log.Warn("handoff: sending the snapshot failed", "err", err)
		if ctx.Err() == nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
			// This process could not produce the snapshot (too large,
			// a Capture failed): that is the reason the upgrade
			// fails, not the new process's "unexpected EOF", and
			// not a timeout or the new process dying, which the
			// upgrade reports as such.
			s.setReject(fmt.Sprintf("this process could not send its state: %v", err))
		}
		return true
	}
	s.mu.Lock()
	s.stateBytes = n
	s.mu.Unlock()
	s.log.Info("state sent", "bytes", n, "capture_and_send", time.Since(start))
	s.events(Event{Step: StepStateSent, Bytes: n})
	fault(faultOldKill, u.gen, s.attempt)
	return true
}

func (s *session) refuse(reason string) {
	s.setReject(reason)
	s.log.Warn("handoff: refusing to hand over state", "reason", reason)
	if err := s.conn.send(message{Type: msgRefused, Reason: reason}, nil); err != nil {
		s.log.Warn("handoff: reply failed", "err", err)
	}
}

// streamPair returns a connected pair of stream sockets: one end stays,
// the other is sent to the new process. The state transport owns its
// framing on it, and an aborted transfer leaves nothing behind on the
// long-lived handoff socket.
func streamPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "baton-state")
	mine, err := fileUnixConn(os.NewFile(uintptr(fds[0]), "baton-state"))
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return mine, theirs, nil
}

func fileUnixConn(f *os.File) (*net.UnixConn, error) {
	c, err := fileConn(f)
	return c.UnixConn, err
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
// has been told, keeps serving with its state.
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
	fault(faultNewListening, u.gen, u.startAttempt)
	log := u.log.With("upgrade", u.startID)
	start := time.Now()
	c := u.parent
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	accepts := u.reg.Accepts()
	if err := c.send(message{Type: msgStateRequest, Accepts: &accepts}, nil); err != nil {
		return state.Info{}, fmt.Errorf("%w: asking for the state: %v", ErrHandshake, err)
	}
	oob := make([]byte, unix.CmsgSpace(4*4))
	m, oobn, err := c.recv(oob)
	files := rights(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return state.Info{}, fmt.Errorf("%w: waiting for the state: %v", ErrHandshake, err)
	}
	switch m.Type {
	case msgNoState:
		log.Info("previous generation handed over no state")
		return state.Info{}, nil
	case msgRefused:
		return state.Info{}, fmt.Errorf("%w: the previous generation refused: %s", ErrStateRejected, m.Reason)
	case msgState:
	default:
		return state.Info{}, fmt.Errorf("%w: unexpected %q message", ErrHandshake, m.Type)
	}
	if len(files) != 1 {
		return state.Info{}, fmt.Errorf("%w: state message with %d files", ErrHandshake, len(files))
	}
	conn, err := fileUnixConn(files[0])
	files = nil // fileUnixConn closed it
	if err != nil {
		return state.Info{}, fmt.Errorf("%w: state socket: %v", ErrHandshake, err)
	}
	info, err := state.Receive(ctx, conn, u.reg)
	conn.Close()
	if err == nil && faultRejects(u.gen, u.startAttempt) {
		err = errors.New("rejected by fault injection")
	}
	if err != nil {
		reason := err.Error()
		if serr := c.send(message{Type: msgRejected, Reason: reason}, nil); serr != nil {
			log.Warn("handoff: telling the previous generation failed", "err", serr)
		}
		return info, fmt.Errorf("%w: %w", ErrStateRejected, err)
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

// restoreFile restores from the durable snapshot, if one is configured.
func (u *Upgrader) restoreFile() (state.Info, error) {
	if u.opts.StateFile == "" {
		return state.Info{}, nil
	}
	info, err := state.ReadFile(u.opts.StateFile, u.reg)
	var aside *state.MovedAsideError
	switch {
	case err == nil:
		u.log.Info("state restored from file", "path", u.opts.StateFile, "bytes", info.Bytes)
		return info, nil
	case errors.Is(err, state.ErrNoSnapshot):
		u.log.Info("no state file: starting fresh", "path", u.opts.StateFile)
		return state.Info{}, nil
	case errors.As(err, &aside) && !u.opts.RefuseCorruptStateFile:
		u.log.Error("state file unusable: moved aside, starting fresh", "path", aside.Path, "moved_to", aside.NewPath, "err", aside.Err)
		return state.Info{}, nil
	}
	return info, fmt.Errorf("restore state file: %w", err)
}

// writeStateFile freezes the participants and writes the durable snapshot.
// With thaw, the participants carry on afterwards (the periodic write);
// without, they stay frozen (the process is stopping).
func (u *Upgrader) writeStateFile(ctx context.Context, thaw bool) error {
	if u.opts.StateFile == "" {
		return nil
	}
	start := time.Now()
	u.stateMu.Lock()
	defer u.stateMu.Unlock()
	if err := u.reg.Freeze(ctx); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if thaw {
		defer u.reg.Thaw()
	}
	n, err := state.WriteFile(u.opts.StateFile, u.reg)
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	u.log.Info("state file written", "path", u.opts.StateFile, "bytes", n, "took", time.Since(start))
	return nil
}

// statePeriodically writes the state file every interval until stop closes.
func (u *Upgrader) statePeriodically(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		u.mu.Lock()
		busy := u.upgrading || u.upgraded || u.closed
		u.mu.Unlock()
		if busy {
			continue // the state is being handed over, or is gone
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		if err := u.writeStateFile(ctx, true); err != nil {
			u.log.Error("periodic state file write failed", "err", err)
		}
		cancel()
	}
}

// sendFinal sends the new process what the counters counted after the
// capture: the old process calls it once it has drained.
func (u *Upgrader) sendFinal() {
	counts := u.counters.sinceCapture()
	if err := u.own.send(message{Type: msgFinal, Counters: counts}, nil); err != nil {
		u.log.Warn("handoff: sending the final counts failed", "err", err)
		return
	}
	u.log.Info("final counts sent to the new process", "counters", len(counts))
}

// awaitFinal runs in the new process after Ready until the previous
// generation has sent its final counts or is gone.
func (u *Upgrader) awaitFinal(c handoffConn) {
	for {
		m, _, err := c.recv(nil)
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
			u.log.Info("final counts received from the previous generation", "counters", len(m.Counters))
			return
		}
	}
}
