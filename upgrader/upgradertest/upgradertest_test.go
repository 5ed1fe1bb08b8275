package upgradertest_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
	"go.uber.org/goleak"
)

// buildDemo builds baton-demo, with the fault injection build tag if asked.
func buildDemo(t *testing.T, tags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "baton-demo")
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append(args, "github.com/batonhq/baton/cmd/baton-demo")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, bin string, env ...string) *upgradertest.Service {
	addr := freeAddr(t)
	return upgradertest.Start(t, bin, upgradertest.Options{
		Args: []string{"-addr", addr, "-pidfile", "{dir}/service.pid", "-tasks", "100", "-task-interval", "50ms"},
		Env:  env,
		URL:  "http://" + addr,
	})
}

// TestCheckUpgrades is the kit used as a user would, on baton-demo.
func TestCheckUpgrades(t *testing.T) {
	// After the kit's own cleanup, which stops the service and its log
	// reader.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s := start(t, buildDemo(t, ""))
	r := upgradertest.CheckUpgrades(t, s, 5, 150*time.Millisecond,
		upgradertest.LoadConfig{Clients: 8, Fresh: 0.5, Post: 0.5, Rate: 500})
	if len(r.Pids) < 2 {
		t.Errorf("replies came from %d processes", len(r.Pids))
	}
}

// TestFault: a new process that rejects the state leaves the old one
// serving, which the kit reports as ErrNoUpgrade; the next attempt works.
func TestFault(t *testing.T) {
	// After the kit's own cleanup, which stops the service and its log
	// reader.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s := start(t, buildDemo(t, "batonfault"), upgradertest.Fault(upgradertest.FaultNewReject, 1, 1))
	old := s.Pid(t)
	if _, err := s.Upgrade(t, 3*time.Second); !errors.Is(err, upgradertest.ErrNoUpgrade) {
		t.Fatalf("upgrade with a rejecting new process: %v, want ErrNoUpgrade", err)
	}
	if got := s.Pid(t); got != old {
		t.Fatalf("pid file names %d after a failed upgrade, want %d", got, old)
	}
	pid, err := s.Upgrade(t, time.Minute)
	if err != nil || pid == old {
		t.Fatalf("second attempt: pid %d, %v", pid, err)
	}
	if upgradertest.Alive(old) {
		t.Errorf("old pid %d still running", old)
	}
}

// TestStartScrubsTheEnvironment: a test run under a service manager must
// not hand the service the manager's variables, or the service would talk
// to the test's manager; the rest of the environment and Options.Env reach
// it. The "service" is a shell that writes its environment and pid file.
func TestStartScrubsTheEnvironment(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for _, k := range []string{"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC", "FDSTORE"} {
		t.Setenv(k, "from-the-test")
	}
	t.Setenv("UPGRADERTEST_KEPT", "yes")
	s := upgradertest.Start(t, "/bin/sh", upgradertest.Options{
		Args: []string{"-c", "env > {dir}/env; echo $$ > {dir}/service.pid; exec sleep 60"},
		Env:  []string{"UPGRADERTEST_ADDED=yes"},
	})
	b, err := os.ReadFile(filepath.Join(s.Dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	env := string(b)
	if strings.Contains(env, "from-the-test") {
		t.Errorf("the service got the service manager's variables:\n%s", env)
	}
	for _, want := range []string{"UPGRADERTEST_KEPT=yes", "UPGRADERTEST_ADDED=yes"} {
		if !strings.Contains(env, want) {
			t.Errorf("the service's environment lacks %s:\n%s", want, env)
		}
	}
}
