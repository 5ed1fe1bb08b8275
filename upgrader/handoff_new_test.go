package upgrader

// The new side of the handoff against a parent that sends garbage, or
// nothing usable, on a real handoff socket: Restore fails with a clear
// error, tells the parent when it rejects the state, and closes every fd it
// was sent.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// openFds counts this process's open descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(entries)
}

// newChild returns an Upgrader for a process started by an upgrade with
// BATON_HANDOFF set to env, and the parent's end of its handoff socket.
func newChild(t *testing.T, env string) (*Upgrader, handoffConn) {
	t.Helper()
	parentEnd, childEnd, err := newSocketPair()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*os.File{handoffFileName + "1": childEnd}
	ff := newChildFlip(files)
	u, err := newUpgrader(ff, Options{}, env)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close() // not taken
	}
	parent, err := fileConn(parentEnd)
	if err != nil {
		t.Fatal(err)
	}
	return u, parent
}

func goodEnv() string { return fmt.Sprintf("v=1;ppid=%d;gen=1;attempt=1", os.Getppid()) }

// TestHandoffEnvBadInput: a process started by an upgrade whose
// BATON_HANDOFF it cannot use must not become ready: Restore and Ready fail
// with ErrStateRejected and say why, and the parent keeps its state. Without
// the variable the parent is not baton, and there is nothing to receive.
func TestHandoffEnvBadInput(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name, env, want string
	}{
		{"garbage", "garbage", "bad field"},
		{"other version", fmt.Sprintf("v=2;ppid=%d;gen=1;attempt=1", os.Getppid()), "version 2"},
		{"other parent", "v=1;ppid=1;gen=1;attempt=1", "meant for a child of pid 1"},
		{"unknown fd name", fmt.Sprintf("v=1;ppid=%d;gen=7;attempt=1", os.Getppid()), "baton.handoff.7 not inherited"},
		{"huge number", "v=1;ppid=99999999999999999999999;gen=1;attempt=1", "bad number"},
	}
	before := openFds(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, parent := newChild(t, tt.env)
			defer parent.Close()
			defer u.Close()
			_, err := u.Restore(context.Background())
			if !errors.Is(err, ErrStateRejected) || !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore: %v; want ErrStateRejected and ErrHandshake saying %q", err, tt.want)
			}
			if err := u.Ready(); !errors.Is(err, ErrStateRejected) {
				t.Fatalf("Ready: %v, want the Restore error", err)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		u, parent := newChild(t, "")
		defer parent.Close()
		defer u.Close()
		if info, err := u.Restore(context.Background()); err != nil || info.Bytes != 0 {
			t.Fatalf("Restore without BATON_HANDOFF: %+v, %v; want nothing to restore", info, err)
		}
	})
	if after := openFds(t); after != before {
		t.Errorf("%d fds before, %d after", before, after)
	}
}

// TestRestoreFromBadParent plays a parent that answers the state request
// with garbage on a real handoff socket. Restore must fail with a clear
// error (ErrHandshake for a broken handshake, ErrStateRejected for a
// snapshot that cannot be used, reported back to the parent), close every
// fd it was sent, and never panic.
func TestRestoreFromBadParent(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []badParentCase{
		{name: "not JSON", answer: answerRaw([]byte("not json")), want: ErrHandshake, wantMsg: "waiting for the state"},
		{name: "other version", answer: answerRaw([]byte(`{"v":2,"type":"state"}`)), want: ErrHandshake, wantMsg: "handoff version 2"},
		{name: "no type", answer: answerRaw([]byte(`{"v":1}`)), want: ErrHandshake, wantMsg: "without a type"},
		{name: "oversized", answer: answerRaw(bytes.Repeat([]byte("x"), maxMessageSize+100)), want: ErrHandshake, wantMsg: "larger than"},
		{name: "empty datagram", answer: answerRaw(nil), want: ErrHandshake, wantMsg: "EOF"},
		{name: "unknown type", answer: answerRaw([]byte(`{"v":1,"type":"frobnicate"}`)), want: ErrHandshake, wantMsg: `unexpected "frobnicate"`},
		{name: "state without fd", answer: answerRaw([]byte(`{"v":1,"type":"state"}`)), want: ErrHandshake, wantMsg: "with 0 files"},
		{name: "state with two fds", answer: answerStateWithPipes(1), want: ErrHandshake, wantMsg: "with 2 files"},
		{name: "state with ten fds", answer: answerStateWithPipes(5), want: ErrHandshake, wantMsg: "files"},
		{name: "state with a pipe", answer: answerStateWithPipe, want: ErrHandshake, wantMsg: "state socket"},
		{name: "snapshot socket closed", answer: answerState(nil), want: ErrStateRejected, wantMsg: "EOF", rejected: true},
		{name: "bad magic", answer: answerState([]byte("GARBAGE GARBAGE GARBAGE")), want: state.ErrBadMagic, rejected: true},
		{name: "unknown transport kind", answer: answerState(transportHeader(9)), want: state.ErrTransport, rejected: true},
		{name: "memfd header without fd", answer: answerState(transportHeader(1)), want: state.ErrTransport, rejected: true},
		{name: "stream of garbage", answer: answerState(append(transportHeader(2), bytes.Repeat([]byte{0xff}, 4096)...)),
			want: ErrStateRejected, rejected: true},
		{name: "truncated snapshot", answer: answerTruncatedSnapshot, want: state.ErrCorrupt, rejected: true},
		{name: "refused", answer: answerRaw([]byte(`{"v":1,"type":"refused","reason":"not today"}`)), want: ErrStateRejected, wantMsg: "not today"},
		{name: "parent hangs up", answer: func(t *testing.T, p handoffConn) { p.Close() }, want: ErrHandshake, wantMsg: "EOF"},
	}
	before := openFds(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkRestoreFromBadParent(t, tt) })
	}
	if after := openFds(t); after != before {
		t.Errorf("%d fds before, %d after: the fds sent were not all closed", before, after)
	}
}

// badParentCase is a parent's answer to the state request, and what Restore
// must make of it.
type badParentCase struct {
	name    string
	answer  func(t *testing.T, p handoffConn)
	want    error
	wantMsg string
	// rejected: the child tells the parent it rejected the state.
	rejected bool
}

// checkRestoreFromBadParent plays the parent up to the state request, gives
// tt's answer and checks Restore's error and what the parent was told.
func checkRestoreFromBadParent(t *testing.T, tt badParentCase) {
	u, parent := newChild(t, goodEnv())
	defer parent.Close()
	defer u.Close()
	parent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, _, err := parent.recv(nil); err != nil || m.Type != msgHello || m.Pid != os.Getpid() {
		t.Fatalf("hello: %+v, %v", m, err)
	}
	restored := make(chan error, 1)
	go func() {
		_, err := u.Restore(context.Background())
		restored <- err
	}()
	if m, _, err := parent.recv(nil); err != nil || m.Type != msgStateRequest || m.Accepts == nil {
		t.Fatalf("state request: %+v, %v", m, err)
	}
	tt.answer(t, parent)
	var err error
	select {
	case err = <-restored:
	case <-time.After(10 * time.Second):
		t.Fatal("Restore did not return")
	}
	if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
		t.Fatalf("Restore: %v; want %v saying %q", err, tt.want, tt.wantMsg)
	}
	if tt.rejected {
		if !errors.Is(err, ErrStateRejected) {
			t.Errorf("Restore: %v does not wrap ErrStateRejected", err)
		}
		if m, _, rerr := parent.recv(nil); rerr != nil || m.Type != msgRejected || m.Reason == "" {
			t.Errorf("the parent was not told: %+v, %v", m, rerr)
		}
	}
}

// answerState answers with a "state" message carrying one end of a stream
// socket pair and writes b on the other end, then closes it.
func answerState(b []byte) func(t *testing.T, p handoffConn) {
	return func(t *testing.T, p handoffConn) {
		mine := sendStateSocket(t, p)
		defer mine.Close()
		mine.Write(b)
	}
}

// sendStateSocket plays the parent's "state" message: it sends one end of a
// fresh stream socket pair on p and returns the other, on which the
// snapshot goes.
func sendStateSocket(t *testing.T, p handoffConn) *net.UnixConn {
	t.Helper()
	return sendSocket(t, p, message{Type: msgState})
}

// sendSocket is sendStateSocket for a message of type typ: msgState, or
// msgPreState for the first round of a pre-copy.
func sendSocket(t *testing.T, p handoffConn, m message) *net.UnixConn {
	t.Helper()
	mine, theirs, err := streamPair()
	if err != nil {
		t.Fatal(err)
	}
	err = p.send(m, unix.UnixRights(int(theirs.Fd())))
	theirs.Close()
	if err != nil {
		mine.Close()
		t.Fatal(err)
	}
	return mine
}

// answerRaw answers with the datagram b.
func answerRaw(b []byte) func(t *testing.T, p handoffConn) {
	return func(t *testing.T, p handoffConn) {
		if _, _, err := p.WriteMsgUnix(b, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// answerStateWithPipes answers with a "state" message carrying both ends
// of n pipes.
func answerStateWithPipes(n int) func(t *testing.T, p handoffConn) {
	return func(t *testing.T, p handoffConn) {
		var fds []int
		for i := 0; i < n; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			fds = append(fds, int(r.Fd()), int(w.Fd()))
		}
		b, _ := encodeMessage(message{Type: msgState})
		if _, _, err := p.WriteMsgUnix(b, unix.UnixRights(fds...), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// answerStateWithPipe answers with a "state" message whose one fd is a
// pipe, not a socket.
func answerStateWithPipe(t *testing.T, p handoffConn) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := p.send(message{Type: msgState}, unix.UnixRights(int(r.Fd()))); err != nil {
		t.Fatal(err)
	}
}

// answerTruncatedSnapshot sends a snapshot missing its last bytes.
func answerTruncatedSnapshot(t *testing.T, p handoffConn) {
	var buf bytes.Buffer
	reg, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	answerState(append(transportHeader(2), buf.Bytes()[:buf.Len()-3]...))(t, p)
}

// transportHeader is a stream transport header of the given kind.
func transportHeader(kind byte) []byte {
	h := append([]byte("BTNX"), 1, kind, 0, 0)
	return binary.BigEndian.AppendUint64(h, 0)
}

// TestRestoreFromGoodParent is the control for TestRestoreFromBadParent:
// the same harness with a parent that sends a real snapshot.
func TestRestoreFromGoodParent(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, parent := newChild(t, goodEnv())
	defer parent.Close()
	defer u.Close()
	var got, want struct{ N int }
	want.N = 42
	if err := u.State().Register(state.JSON("test.value", 1, &got, nil)); err != nil {
		t.Fatal(err)
	}
	src, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Register(state.JSON("test.value", 1, &want, nil)); err != nil {
		t.Fatal(err)
	}
	parent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := parent.recv(nil); err != nil {
		t.Fatal(err)
	}
	restored := make(chan error, 1)
	go func() {
		_, err := u.Restore(context.Background())
		restored <- err
	}()
	if _, _, err := parent.recv(nil); err != nil {
		t.Fatal(err)
	}
	mine := sendStateSocket(t, parent)
	defer mine.Close()
	if _, err := state.Send(context.Background(), mine, src); err != nil {
		t.Fatal(err)
	}
	if err := <-restored; err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if m, _, err := parent.recv(nil); err != nil || m.Type != msgRestored {
		t.Fatalf("after the restore: %+v, %v", m, err)
	}
	if got.N != 42 {
		t.Fatalf("restored %+v", got)
	}
}
