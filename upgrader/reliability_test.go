package upgrader

// Regression tests for what the reliability suite (tests/reliability_*_test.go)
// found, at the unit level.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
)

// TestRecvQueuedAfterDeadline: once the new process has exited, the old one
// moves the read deadline into the past and reads what is left queued (the
// reason it rejected the state). RawConn.Read refuses to run after the
// deadline, so recvQueued must not use it.
func TestRecvQueuedAfterDeadline(t *testing.T) {
	a, b, err := newSocketPair()
	if err != nil {
		t.Fatal(err)
	}
	old, err := fileConn(a)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	child, err := fileConn(b)
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	if err := child.send(message{Type: msgRejected, Reason: "too large"}, nil); err != nil {
		t.Fatal(err)
	}
	old.SetReadDeadline(time.Unix(1, 0))
	m, ok := old.recvQueued()
	if !ok || m.Type != msgRejected || m.Reason != "too large" {
		t.Fatalf("recvQueued after the deadline: %+v, %v", m, ok)
	}
	if _, ok := old.recvQueued(); ok {
		t.Fatal("recvQueued returned a message from an empty socket")
	}
}

// TestServeWaitsForReady: a process started by an upgrade accepts no
// connection before Ready, so that a new process that then fails takes no
// request with it; the previous generation serves them meanwhile.
func TestServeWaitsForReady(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, parent := newChild(t, "")
	defer parent.Close()
	defer u.Close()
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
	})}, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Nothing can be observed to not happen without waiting: 200 ms in
	// which the request stays unanswered.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || served.Load() != 0 {
		t.Fatalf("before Ready: read %d bytes, %v; %d requests served", n, err, served.Load())
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil || served.Load() != 1 {
		t.Fatalf("after Ready: %v; %d requests served", err, served.Load())
	}
}

// TestShutdownAbandonsUpgrade: a stop during an upgrade ends the upgrade
// first (the new process is killed, the participants thaw: the upgrade has
// failed before the stop begins), then drains and writes the state file.
func TestShutdownAbandonsUpgrade(t *testing.T) {
	defer goleak.VerifyNone(t)
	ff := newFakeFlip()
	ff.stopInterruptsUpgrade(nil)
	stateFile := t.TempDir() + "/state"
	u, err := newUpgrader(ff, Options{StateFile: stateFile}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var v struct{ N int }
	v.N = 7
	if err := u.State().Register(state.JSON("test.value", 1, &v, nil)); err != nil {
		t.Fatal(err)
	}
	var steps []string
	u.OnEvent(func(e Event) { steps = append(steps, string(e.Step)) })
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	upgraded := upgradeAsync(context.Background(), u)
	<-ff.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := u.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown during an upgrade: %v", err)
	}
	if err := <-upgraded; !errors.Is(err, ErrClosed) {
		t.Fatalf("the abandoned upgrade: %v, want ErrClosed", err)
	}
	if _, err := os.Stat(stateFile); err != nil {
		t.Fatalf("state file not written: %v", err)
	}
	if want := []string{"ready", "started", "failed", "stopping"}; !slices.Equal(steps, want) {
		t.Fatalf("steps %v, want %v: the upgrade must end before the stop begins", steps, want)
	}
}

// TestRestoreCarriesOnWhenParentDiedAfterSending: the parent sends the
// whole snapshot and dies before the new process confirms it. The new
// process holds all the state: Restore succeeds instead of failing on the
// confirmation, and Ready carries on.
func TestRestoreCarriesOnWhenParentDiedAfterSending(t *testing.T) {
	defer goleak.VerifyNone(t)
	parentEnd, childEnd, err := newSocketPair()
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	ff := newChildFlip(map[string]*os.File{handoffFileName + "1": childEnd})
	ff.waitForParent = func(ctx context.Context) error {
		select {
		case <-gone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	u, err := newUpgrader(ff, Options{}, goodEnv())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// The parent pid is checked when the wait for tableflip runs out;
	// here tableflip itself reports the parent gone.
	parent, err := fileConn(parentEnd)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ N int }
	if err := u.State().Register(state.JSON("test.value", 1, &v, nil)); err != nil {
		t.Fatal(err)
	}
	src, _ := state.NewRegistry(state.Options{})
	want := struct{ N int }{N: 9}
	if err := src.Register(state.JSON("test.value", 1, &want, nil)); err != nil {
		t.Fatal(err)
	}
	parent.SetReadDeadline(time.Now().Add(10 * time.Second))
	parent.recv(nil) // hello
	restored := make(chan error, 1)
	go func() {
		_, err := u.Restore(context.Background())
		restored <- err
	}()
	parent.recv(nil) // state request
	mine := sendStateSocket(t, parent)
	if _, err := state.Send(context.Background(), mine, src); err != nil {
		t.Fatal(err)
	}
	mine.Close()
	// The parent dies: its end of the handoff socket closes, and
	// tableflip sees it exit.
	parent.Close()
	close(gone)
	if err := <-restored; err != nil {
		t.Fatalf("Restore after the parent died having sent everything: %v", err)
	}
	if v.N != 9 {
		t.Fatalf("restored %+v", v)
	}
}

// TestDrainKeepsHalfSentRequest: during a drain, a connection on which a
// request has begun but whose headers are not complete (net/http still
// calls it new or idle) is not closed as quiet, however long the client
// pauses: the request is answered once it is complete.
func TestDrainKeepsHalfSentRequest(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, _ := newTestUpgrader(t, Options{IdleGrace: 50 * time.Millisecond})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("answered"))
	})}, ln)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A first request makes sure the server holds the connection (a
	// connection still in the accept queue would be reset when the drain
	// closes the listener); the second is sent in part. Its bytes are
	// then either unread in the socket or read: the drain sees both.
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- u.Shutdown(ctx)
	}()
	// Six idle graces without a byte: the quiet-connection check runs
	// every quarter grace, so it has had its chances.
	select {
	case err := <-drained:
		t.Fatalf("the drain ended (%v) with a request half sent", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := c.Write([]byte("\r\n")); err != nil {
		t.Fatalf("the connection was closed under the half-sent request: %v", err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the completed request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "answered" || !resp.Close {
		t.Errorf("answer %q, close %v; want answered, closing", body, resp.Close)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
