package upgrader

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestProbation: the old process's side of a probation, the new process
// played by the test over the real handoff socket, its pid a real process.
// During the probation the old process's listener accepts nothing but its
// socket stays open (a request sent meanwhile waits in the queue); when the
// new process dies, or fails the health check (the old process then kills
// it), the old process answers that request, the upgrade fails at step
// "probation" with ErrRolledBack and the participants thaw; when the
// probation passes, it sends "commit" and the upgrade succeeds once the
// ready byte comes. A trigger during the probation gets ErrProbation.
func TestProbation(t *testing.T) {
	for _, tt := range []struct {
		name string
		// dies: the new process exits during the probation; unhealthy:
		// the health check fails. Neither: the probation passes.
		dies, unhealthy bool
	}{{name: "new-process-dies", dies: true}, {name: "health-check-fails", unhealthy: true}, {name: "passes"}} {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			testProbation(t, tt.dies, tt.unhealthy)
		})
	}
}

func testProbation(t *testing.T, dies, unhealthy bool) {
	var checks atomic.Int32
	ff := &captureFlip{fakeFlip: newFakeFlip(), files: map[string]*os.File{}}
	const probation = 1200 * time.Millisecond // a check every 300 ms
	u, err := newUpgrader(ff, Options{Probation: probation, HealthCheck: func(ctx context.Context) error {
		checks.Add(1)
		if unhealthy {
			return errors.New("unhealthy")
		}
		return nil
	}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var thaws atomic.Int32
	if err := u.State().Register(state.Participant{Name: "probe", Version: 1,
		Freeze:  func(context.Context) error { return nil },
		Thaw:    func() { thaws.Add(1) },
		Capture: func(io.Writer) error { return nil },
		Restore: func(io.Reader) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "old")
	})}, ln)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	child, err := fileConn(ff.files[handoffFileName+"1"])
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	proc, exited, stop := sleeper(t)
	defer stop()

	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := u.Upgrade(context.Background())
		done <- outcome{res, err}
	}()
	<-ff.started

	// The new process: hello, state, restored, ready-request.
	playRestore(t, child, proc.Process.Pid, state.Participant{Name: "probe", Version: 1,
		Freeze: func(context.Context) error { return nil }, Thaw: func() {},
		Capture: func(io.Writer) error { return nil }, Restore: func(io.Reader) error { return nil }})
	if err := child.send(message{Type: msgReadyRequest, Attempt: 1}, nil); err != nil {
		t.Fatal(err)
	}
	reply, _, err := child.recv(nil)
	if err != nil || reply.Type != msgReadyGo || reply.ProbationMillis != probation.Milliseconds() {
		t.Fatalf("ready answer: %+v, %v; want ready-go with probation_ms %d", reply, err, probation.Milliseconds())
	}
	if err := child.send(message{Type: msgServing, Attempt: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for !u.isOnProbation() {
		time.Sleep(time.Millisecond)
	}
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrProbation) {
		t.Errorf("a trigger during the probation: %v, want ErrProbation", err)
	}

	// A request sent now waits in the socket's queue: nobody accepts.
	answered := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			answered <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- string(b)
	}()
	select {
	case got := <-answered:
		t.Fatalf("the old process answered during the probation: %q", got)
	case <-time.After(100 * time.Millisecond):
	}

	if dies {
		proc.Process.Kill()
		<-exited
	}
	if dies || unhealthy {
		select {
		case got := <-answered:
			if got != "old" {
				t.Errorf("the request queued during the probation got %q, want the old process's answer", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the old process did not accept again after the rollback")
		}
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Fatal("the new process was not killed")
		}
		ff.result <- errors.New("child pid exited: signal: killed") // tableflip saw it exit
		got := <-done
		var ue *UpgradeError
		if !errors.As(got.err, &ue) || !errors.Is(got.err, ErrRolledBack) || ue.Step != "probation" || ue.ExitStatus != "signal: killed" {
			t.Fatalf("Upgrade: %v, want an UpgradeError at probation wrapping ErrRolledBack", got.err)
		}
		if unhealthy != errors.Is(got.err, ErrHealthCheck) {
			t.Errorf("Upgrade: %v; ErrHealthCheck wrapped: %v, want %v", got.err, !unhealthy, unhealthy)
		}
		if thaws.Load() != 1 {
			t.Errorf("the participants thawed %d times, want 1", thaws.Load())
		}
		if h := u.Status().History; len(h) != 1 || h[0].Result != resultRolledBack {
			t.Errorf("history: %+v, want one rolled_back record", h)
		}
		return
	}

	// The probation passes: commit, then the ready byte.
	child.SetReadDeadline(time.Now().Add(5 * time.Second))
	commit, _, err := child.recv(nil)
	if err != nil || commit.Type != msgCommit {
		t.Fatalf("after the probation: %+v, %v; want commit", commit, err)
	}
	if n := checks.Load(); n != ProbationChecks {
		t.Errorf("the health check was called %d times, want %d", n, ProbationChecks)
	}
	ff.result <- nil
	got := <-done
	if got.err != nil {
		t.Fatalf("Upgrade: %v", got.err)
	}
	select {
	case <-u.Exit():
	default:
		t.Error("Exit not closed after the probation passed")
	}
	if thaws.Load() != 0 {
		t.Errorf("the participants thawed after a successful probation")
	}
	u.Close()
	<-answered // the listener closed under the queued request
}

// playRestore plays a new process of attempt 1 whose pid is pid on the
// handoff socket child: it says hello, asks for the state (the upgrader's
// own sections and ps), receives and restores it, and says "restored". The
// reads have 10 s.
func playRestore(t *testing.T, child handoffConn, pid int, ps ...state.Participant) {
	t.Helper()
	reg := childRegistry(t, ps...)
	accepts := reg.Accepts()
	child.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, m := range []message{{Type: msgHello, Pid: pid, Attempt: 1}, {Type: msgStateRequest, Accepts: &accepts}} {
		if err := child.send(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	oob := make([]byte, unix.CmsgSpace(4))
	m, oobn, err := child.recv(oob)
	files := rights(oob[:oobn])
	if err != nil || m.Type != msgState || len(files) != 1 {
		t.Fatalf("state message: %+v, %d files, %v", m, len(files), err)
	}
	sc, err := fileUnixConn(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := state.Receive(context.Background(), sc, reg); err != nil {
		t.Fatal(err)
	}
	if err := child.send(message{Type: msgRestored, Attempt: 1}, nil); err != nil {
		t.Fatal(err)
	}
}

// childRegistry returns the registry of a new process played by a test:
// the upgrader's own sections and ps.
func childRegistry(t *testing.T, ps ...state.Participant) *state.Registry {
	t.Helper()
	reg, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]state.Participant{newCounters().participant(), (&history{}).participant()}, ps...) {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// sleeper starts a real process to stand for the new one: its pid is what
// the upgrader watches and kills. exited closes once it has exited and been
// reaped; stop kills and reaps it.
func sleeper(t *testing.T) (proc *exec.Cmd, exited <-chan struct{}, stop func()) {
	t.Helper()
	proc = exec.Command("sleep", "60")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { proc.Wait(); close(done) }()
	return proc, done, func() { proc.Process.Kill(); <-done }
}
