package upgrader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/batonhq/baton/state"
	"golang.org/x/sys/unix"
)

// The handoff between two generations runs over a SOCK_SEQPACKET socket pair
// that the new process inherits through tableflip under a name carrying its
// generation. The protocol is written down in upgrader/PROTOCOL.md.
const (
	// envHandoff tells the new process that it was started by a baton
	// upgrade, which generation it is, which attempt, and to which parent
	// it is bound (like LISTEN_PID binds LISTEN_FDS): a process whose
	// parent pid differs cannot use it, and its Restore fails. tableflip
	// passes the child no environment of its own, only os.Environ: so
	// upgrade sets the variable in this process's environment for the
	// attempt and removes it after, and New removes it from the process it
	// finds it in, so that nothing else inherits it.
	envHandoff      = "BATON_HANDOFF"
	handoffVersion  = 1
	handoffFileName = "baton.handoff."
	maxMessageSize  = 64 << 10
)

// handoffEnv is the content of BATON_HANDOFF.
type handoffEnv struct {
	Version    int
	ParentPid  int
	Generation int
	Attempt    int
}

func (h handoffEnv) String() string {
	return fmt.Sprintf("v=%d;ppid=%d;gen=%d;attempt=%d", h.Version, h.ParentPid, h.Generation, h.Attempt)
}

// parseHandoffEnv parses BATON_HANDOFF. Every field must be present exactly
// once and be a non-negative integer that fits an int.
func parseHandoffEnv(s string) (handoffEnv, error) {
	var h handoffEnv
	fields := map[string]*int{"v": &h.Version, "ppid": &h.ParentPid, "gen": &h.Generation, "attempt": &h.Attempt}
	seen := make(map[string]bool, len(fields))
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		dst := fields[k]
		if !ok || dst == nil || seen[k] {
			return handoffEnv{}, fmt.Errorf("%w: %s=%q: bad field %q", ErrHandshake, envHandoff, s, kv)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return handoffEnv{}, fmt.Errorf("%w: %s=%q: bad number in %q", ErrHandshake, envHandoff, s, kv)
		}
		*dst, seen[k] = n, true
	}
	if len(seen) != len(fields) {
		return handoffEnv{}, fmt.Errorf("%w: %s=%q: missing fields", ErrHandshake, envHandoff, s)
	}
	if h.Version != handoffVersion {
		return handoffEnv{}, fmt.Errorf("%w: %s version %d, this binary speaks %d", ErrHandshake, envHandoff, h.Version, handoffVersion)
	}
	return h, nil
}

// The state half of the handoff. The new process finishes its own start-up,
// then asks for the state, saying which versions it reads. Only then does
// the old process check that it can be read, freeze its participants (the
// gap in background work starts here), capture and send the snapshot over a
// fresh stream socket pair whose end travels with the "state" message. The
// new process restores and reports "restored" (or "rejected"), then ready.
// If it is not ready in the end, the old process thaws; once it is ready the
// old process never thaws again.
//
// With participants that move in rounds (state.Participant.PreCopy), and
// a new process that takes them (state.Accepts.PreCopy), the old process
// first sends "pre-state" and the first round, without freezing anything;
// the new process restores it and says "pre-restored" (or "rejected").
// Then the old one either sends another "pre-state", a middle round, still
// running (what changed during the round before; nextRound decides), or
// freezes and sends "state" with the last round: what changed since the
// round before.

// Message types of the handoff protocol.
const (
	msgHello        = "hello"         // new -> old: I started; pid, attempt
	msgStateRequest = "state-request" // new -> old: send state; the versions I read
	msgPreState     = "pre-state"     // old -> new: a first or middle round follows, captured while I run; round
	msgPreRestored  = "pre-restored"  // new -> old: that round restored; send another, or freeze and send the rest
	msgState        = "state"         // old -> new: the snapshot follows (memfd or stream)
	msgNoState      = "no-state"      // old -> new: nothing to hand over
	msgRefused      = "refused"       // old -> new: cannot hand over; reason
	msgRestored     = "restored"      // new -> old: state restored
	msgRejected     = "rejected"      // new -> old: cannot use the state; reason
	msgFinal        = "final"         // old -> new, after its drain: counts since the capture
)

// The ready gate: the new process asks before it writes tableflip's ready
// byte, the one point after which the upgrade cannot be undone, and the old
// process answers once, deciding the outcome under its session's lock: go
// (then a deadline that passes does not kill the new process) or abort
// (the deadline passed first; the new process does not become ready and is
// killed). A new process uses it only with an old one that offered it
// (message.ReadyGate), so either side may be of an older release.
const (
	msgReadyRequest = "ready-request" // new -> old: may I become ready?
	msgReadyGo      = "ready-go"      // old -> new: yes; the upgrade is yours
	msgReadyAbort   = "ready-abort"   // old -> new: no; the upgrade was called off
)

// The probation (Options.Probation): a ready-go with probation_ms tells the
// new process to serve but hold its participants frozen and not write
// tableflip's ready byte yet. It says "serving" once its servers accept;
// the old process then stops accepting and watches it, and at the end of a
// probation it passed sends "commit": only then does the new process write
// the ready byte and thaw. A new process that dies or fails the health
// check before is rolled back: the old one takes the service back.
const (
	msgServing = "serving" // new -> old: on probation, my servers accept
	msgCommit  = "commit"  // old -> new: the probation passed; become ready for good
)

// message is one datagram of the handoff protocol.
type message struct {
	Version int    `json:"v"`
	Type    string `json:"type"`
	Pid     int    `json:"pid,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Size    int64  `json:"size,omitempty"`
	// Accepts, on msgStateRequest, says what the new process reads.
	Accepts *state.Accepts `json:"accepts,omitempty"`
	// Counters, on msgFinal, is what the old process counted after the
	// capture, to be added by the new one.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// UpgradeNanos and DrainNanos, on msgFinal, are how long the upgrade
	// took (trigger to ready) and the old process's drain: the new
	// process observes them, as it is the one scraped afterwards.
	UpgradeNanos int64 `json:"upgrade_ns,omitempty"`
	DrainNanos   int64 `json:"drain_ns,omitempty"`
	// ReadyGate, on msgState and msgNoState, says that the old process
	// answers msgReadyRequest.
	ReadyGate bool `json:"ready_gate,omitempty"`
	// Round, on msgPreState and msgPreRestored, numbers the rounds of a
	// pre-copy sent while the old process runs: 1 the first, 2 and on
	// the middle ones.
	Round int `json:"round,omitempty"`
	// ProbationMillis, on msgReadyGo, is the old process's probation: the
	// new process serves on probation, and writes tableflip's ready byte
	// only at msgCommit.
	ProbationMillis int64 `json:"probation_ms,omitempty"`
}

func encodeMessage(m message) ([]byte, error) {
	m.Version = handoffVersion
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMessageSize {
		return nil, fmt.Errorf("%w: %s message of %d bytes exceeds %d", ErrHandshake, m.Type, len(b), maxMessageSize)
	}
	return b, nil
}

func decodeMessage(b []byte) (message, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return message{}, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	if m.Version != handoffVersion {
		return message{}, fmt.Errorf("%w: peer speaks handoff version %d, this binary %d", ErrHandshake, m.Version, handoffVersion)
	}
	if m.Type == "" {
		return message{}, fmt.Errorf("%w: message without a type", ErrHandshake)
	}
	return m, nil
}

// handoffConn is one end of the handoff socket pair.
type handoffConn struct {
	*net.UnixConn
}

func (c handoffConn) send(m message, oob []byte) error {
	b, err := encodeMessage(m)
	if err != nil {
		return err
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// recv reads one message and any ancillary data. It leaves the read
// deadline alone: the owner of the connection moves it to end a read.
func (c handoffConn) recv(oob []byte) (message, int, error) {
	buf := make([]byte, maxMessageSize+1)
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, 0, err
	}
	if n == 0 {
		// A zero-length datagram on SOCK_SEQPACKET is end of file.
		return message{}, 0, io.EOF
	}
	if n > maxMessageSize || flags&msgTrunc != 0 {
		return message{}, oobn, fmt.Errorf("%w: message larger than %d bytes", ErrHandshake, maxMessageSize)
	}
	m, err := decodeMessage(buf[:n])
	return m, oobn, err
}

// recvQueued returns a message already queued on the socket without
// waiting, or ok false if there is none. Once the new process is known to
// have exited, everything it sent is queued: this reads it regardless of
// the read deadline. It uses Control, not Read: RawConn.Read fails with
// os.ErrDeadlineExceeded before calling its function once the deadline has
// passed, which is exactly when this is called.
func (c handoffConn) recvQueued() (m message, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return message{}, false
	}
	buf := make([]byte, maxMessageSize+1)
	var n int
	var rerr error
	err = raw.Control(func(fd uintptr) {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
	})
	if err != nil || rerr != nil || n == 0 || n > maxMessageSize {
		return message{}, false
	}
	m, err = decodeMessage(buf[:n])
	return m, err == nil
}

// discardQueued reads and drops every datagram queued on the socket,
// without waiting.
func (c handoffConn) discardQueued() {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, maxMessageSize+1)
	raw.Control(func(fd uintptr) {
		for i := 0; i < 1024; i++ {
			if _, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT); err != nil {
				return
			}
		}
	})
}

// fileConn turns a socket file into a handoff connection and closes f.
func fileConn(f *os.File) (handoffConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return handoffConn{}, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return handoffConn{}, errors.New("handoff socket is not a unix socket")
	}
	return handoffConn{uc}, nil
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
