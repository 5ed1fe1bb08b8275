package upgrader

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func newTestUpgrader(t *testing.T, opts Options) (*Upgrader, *fakeFlip) {
	t.Helper()
	ff := newFakeFlip()
	u, err := newUpgrader(ff, opts, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u, ff
}

// upgradeAsync runs u.Upgrade(ctx) in a goroutine and returns its error
// on the channel, once.
func upgradeAsync(ctx context.Context, u *Upgrader) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := u.Upgrade(ctx)
		done <- err
	}()
	return done
}

func TestUpgradeLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg := prometheus.NewPedanticRegistry()
	u, ff := newTestUpgrader(t, Options{Registerer: reg})

	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready: %v, want ErrNotReady", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}

	// A failed attempt changes nothing.
	done := make(chan error)
	go func() { _, err := u.Upgrade(context.Background()); done <- err }()
	<-ff.started
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrUpgradeInProgress) {
		t.Fatalf("second trigger: %v, want ErrUpgradeInProgress", err)
	}
	ff.result <- errors.New("child pid=42 exited: exit status 3")
	err := <-done
	var ue *UpgradeError
	if !errors.As(err, &ue) || !errors.Is(err, ErrChildExited) || ue.ExitStatus != "exit status 3" {
		t.Fatalf("failed attempt: %#v, want ErrChildExited with exit status 3", err)
	}
	select {
	case <-u.Exit():
		t.Fatal("Exit closed after a failed upgrade")
	default:
	}

	// A successful one closes Exit, and the process cannot upgrade again.
	go func() { _, err := u.Upgrade(context.Background()); done <- err }()
	<-ff.started
	ff.result <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-u.Exit()
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrUpgraded) {
		t.Fatalf("after success: %v, want ErrUpgraded", err)
	}
	// The old process counts failures; the new one counts the success
	// that made it.
	want := `
# HELP baton_upgrades_total Upgrades of this service, by result; carried over across upgrades.
# TYPE baton_upgrades_total counter
baton_upgrades_total{result="failure"} 1
baton_upgrades_total{result="rolled_back"} 0
baton_upgrades_total{result="success"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "baton_upgrades_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if err := u.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Shutdown: %v, want ErrClosed", err)
	}
}

func TestUpgradeCancelled(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, ff := newTestUpgrader(t, Options{})
	u.Ready()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := u.Upgrade(ctx); done <- err }()
	<-ff.started
	cancel()
	// tableflip reports the child it killed.
	ff.result <- errors.New("child pid=42 exited: signal: killed")
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled upgrade: %v, want context.Canceled", err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		msg    string
		want   error
		status string
	}{
		{"can't start child: fork/exec ./x: permission denied", ErrStartFailed, ""},
		{"new child pid=7 timed out", ErrReadyTimeout, ""},
		{"child pid=7 exited: exit status 3", ErrChildExited, "exit status 3"},
		{"child pid=7 exited: signal: segmentation fault", ErrChildExited, "signal: segmentation fault"},
		{"child pid=7 exited", ErrChildExited, "exit status 0"},
		{"terminating", ErrClosed, ""},
		{"something new", ErrChildExited, ""},
	}
	for _, tt := range tests {
		reason, status := classify(errors.New(tt.msg))
		if !errors.Is(reason, tt.want) || status != tt.status {
			t.Errorf("classify(%q) = %v, %q; want %v, %q", tt.msg, reason, status, tt.want, tt.status)
		}
	}
}

func TestParseHandoffEnv(t *testing.T) {
	good, err := parseHandoffEnv("v=1;ppid=10;gen=3;attempt=2")
	if err != nil || good != (handoffEnv{Version: 1, ParentPid: 10, Generation: 3, Attempt: 2}) {
		t.Fatalf("good env: %+v, %v", good, err)
	}
	if got, _ := parseHandoffEnv(good.String()); got != good {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range []string{
		"", "v=1", "v=2;ppid=10;gen=3;attempt=2", "v=1;ppid=10;gen=3;attempt=2;x=1",
		"v=1;ppid=-1;gen=3;attempt=2", "v=1;ppid=10;gen=3;gen=3", "v=1;ppid=99999999999999999999;gen=1;attempt=1",
		"v=1;ppid=10;gen=3;attempt", strings.Repeat("v=1;", 1000),
	} {
		if _, err := parseHandoffEnv(bad); !errors.Is(err, ErrHandshake) {
			t.Errorf("parseHandoffEnv(%q) = %v, want ErrHandshake", bad, err)
		}
	}
}

func TestMessages(t *testing.T) {
	b, err := encodeMessage(message{Type: msgHello, Pid: 5, Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMessage(b)
	if err != nil || m.Type != msgHello || m.Pid != 5 {
		t.Fatalf("round trip: %+v, %v", m, err)
	}
	for _, bad := range []string{`{"v":2,"type":"hello"}`, `{"v":1}`, `not json`, `{"v":1,"type":"hello","pid":"x"}`} {
		if _, err := decodeMessage([]byte(bad)); !errors.Is(err, ErrHandshake) {
			t.Errorf("decodeMessage(%s) = %v, want ErrHandshake", bad, err)
		}
	}
	if _, err := encodeMessage(message{Type: msgRejected, Reason: strings.Repeat("x", maxMessageSize)}); !errors.Is(err, ErrHandshake) {
		t.Errorf("oversized message: %v, want ErrHandshake", err)
	}
}

// TestDrain checks the drain against a real server and real connections: a
// request in flight when the drain starts is answered, a kept-alive
// connection gets "Connection: close" on its next reply, a quiet one is
// closed after the grace, and nothing is accepted once the drain started.
func TestDrain(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, _ := newTestUpgrader(t, Options{IdleGrace: 100 * time.Millisecond})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "slow")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
	u.Serve(&http.Server{Handler: mux}, ln)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()

	busy := &http.Client{Transport: &http.Transport{}}
	defer busy.CloseIdleConnections()
	quiet := &http.Client{Transport: &http.Transport{}}
	defer quiet.CloseIdleConnections()
	for _, c := range []*http.Client{busy, quiet} {
		if _, err := get(c, url+"/"); err != nil {
			t.Fatal(err)
		}
	}
	slow := make(chan string)
	go func() {
		body, err := get(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, url+"/slow")
		if err != nil {
			body = err.Error()
		}
		slow <- body
	}()
	<-entered

	drained := make(chan error)
	go func() { drained <- u.Shutdown(context.Background()) }()
	// The listener closes first: a new connection is refused.
	waitRefused(t, ln.Addr().String())

	// The kept-alive connection is still served, and told to close.
	resp, err := busy.Get(url + "/")
	if err != nil {
		t.Fatalf("request on a kept-alive connection during the drain: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !resp.Close {
		t.Errorf("reply during the drain does not close the connection")
	}
	close(release)
	if got := <-slow; got != "slow" {
		t.Errorf("request in flight got %q", got)
	}
	// The quiet connection is closed after the grace, so the drain ends
	// well before the default 30 s deadline.
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not end")
	}
}

func TestDrainDeadline(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg := prometheus.NewPedanticRegistry()
	u, _ := newTestUpgrader(t, Options{Registerer: reg})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})}, ln)
	u.Ready()
	failed := make(chan error)
	go func() {
		_, err := get(&http.Client{}, "http://"+ln.Addr().String()+"/")
		failed <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := u.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past the deadline: %v, want DeadlineExceeded", err)
	}
	if err := <-failed; err == nil {
		t.Error("request cut off by the deadline succeeded")
	}
	if got := u.Counters().Counter(counterDrainForced).Load(); got != 1 {
		t.Errorf("forced connections %v, want 1", got)
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitRefused dials until the listener is gone; Shutdown closes it first
// thing, so this ends at once.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.Close()
	}
	t.Fatal("listener still accepting during the drain")
}
