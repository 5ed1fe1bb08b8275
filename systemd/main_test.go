//go:build linux

package systemd_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/systemdtest"
)

// The test binary doubles as the socket-activated service, as os/exec's
// tests do: TestMain dispatches on helperEnv before any test runs.
const (
	helperEnv = "BATON_SYSTEMD_TEST_HELPER"
	modeEnv   = "BATON_SYSTEMD_TEST_MODE"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "activated":
		os.Exit(activatedMain())
	case "inspect":
		os.Exit(inspectMain())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(3)
	}
}

// activationReport is what the activated helper saw, as JSON on stdout.
type activationReport struct {
	Err               string
	InvalidActivation bool // errors.Is(err, ErrInvalidActivation)
	SocketType        bool // errors.Is(err, ErrSocketType)
	Files             []fileReport
	Env               map[string]string // LISTEN_* left after the call
	Child             *inspectReport    // what a child started afterwards inherited
}

type fileReport struct {
	Name     string
	FD       int
	CloExec  bool
	NonBlock bool
	Ino      uint64
	Got      string // what the socket delivered (listeners, packet conns)
}

// activatedMain runs the activation call named by modeEnv first thing, before
// anything could open a descriptor, and reports.
func activatedMain() int {
	mode := os.Getenv(modeEnv)
	opts := systemd.ActivationOptions{KeepEnvironment: strings.Contains(mode, "keep-env")}
	var (
		rep activationReport
		err error
	)
	switch {
	case strings.HasPrefix(mode, "files"):
		var files []systemd.File
		files, err = systemd.Files(opts)
		for _, f := range files {
			rep.Files = append(rep.Files, describe(f.Name, f.File))
		}
	case strings.HasPrefix(mode, "listeners"):
		var lns []systemd.Listener
		lns, err = systemd.Listeners(opts)
		for _, l := range lns {
			fr := describe(l.Name, l.Listener.(syscall.Conn))
			fr.Got = serveOne(l)
			rep.Files = append(rep.Files, fr)
		}
	case strings.HasPrefix(mode, "packetconns"):
		var pcs []systemd.PacketConn
		pcs, err = systemd.PacketConns(opts)
		for _, p := range pcs {
			fr := describe(p.Name, p.PacketConn.(syscall.Conn))
			buf := make([]byte, 64)
			p.PacketConn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, rerr := p.PacketConn.ReadFrom(buf)
			fr.Got = string(buf[:n])
			if rerr != nil {
				fr.Got = rerr.Error()
			}
			rep.Files = append(rep.Files, fr)
		}
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		rep.Err = err.Error()
		rep.InvalidActivation = errors.Is(err, systemd.ErrInvalidActivation)
		rep.SocketType = errors.Is(err, systemd.ErrSocketType)
	}
	rep.Env = listenEnv()
	if strings.Contains(mode, "child") {
		rep.Child = runInspect()
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// serveOne accepts one connection (queued by the test before the service
// started, as systemd queues the one that triggered activation) and answers
// with the listener's name. Under systemd-socket-activate the test only
// connects after it reads the "listening" line.
func serveOne(l systemd.Listener) string {
	if os.Getenv(modeEnv) == "listeners-announce" {
		fmt.Printf("listening %s\n", l.Name)
	}
	type deadliner interface{ SetDeadline(time.Time) error }
	l.Listener.(deadliner).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := l.Listener.Accept()
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	fmt.Fprintf(c, "%s from %d\n", l.Name, os.Getpid())
	return "served " + c.RemoteAddr().Network()
}

func describe(name string, c syscall.Conn) fileReport {
	fr := fileReport{Name: name, FD: -1}
	rc, err := c.SyscallConn()
	if err != nil {
		return fr
	}
	rc.Control(func(fd uintptr) {
		fr.FD = int(fd)
		fdFlags, _ := unix.FcntlInt(fd, unix.F_GETFD, 0)
		flFlags, _ := unix.FcntlInt(fd, unix.F_GETFL, 0)
		fr.CloExec = fdFlags&unix.FD_CLOEXEC != 0
		fr.NonBlock = flFlags&unix.O_NONBLOCK != 0
		var st unix.Stat_t
		if unix.Fstat(int(fd), &st) == nil {
			fr.Ino = st.Ino
		}
	})
	return fr
}

func listenEnv() map[string]string {
	env := map[string]string{}
	for _, k := range []string{systemd.EnvListenPID, systemd.EnvListenFDs, systemd.EnvListenFDNames} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return env
}

// inspectReport is what a grandchild inherited: LISTEN_* and the targets of
// its descriptors above 2.
type inspectReport struct {
	Env map[string]string
	FDs map[int]string
}

func runInspect() *inspectReport {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=inspect")
	out, err := cmd.Output()
	rep := &inspectReport{}
	if err == nil {
		err = json.Unmarshal(out, rep)
	}
	if err != nil {
		rep.FDs = map[int]string{-1: "inspect failed: " + err.Error()}
	}
	return rep
}

func inspectMain() int {
	rep := inspectReport{Env: listenEnv(), FDs: map[int]string{}}
	// read the table before anything else opens descriptors; the one
	// ReadDir uses shows up as the directory itself
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	self := fmt.Sprintf("/proc/%d/fd", os.Getpid())
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && fd > 2 && target != self {
			rep.FDs[fd] = target
		}
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// startHelper runs the test binary as a socket-activated service with files
// as fds 3… and env (see systemdtest.ActivationCommand: LISTEN_PID=self
// becomes the service's pid).
func startHelper(t *testing.T, mode string, files []*os.File, env ...string) activationReport {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := systemdtest.RunActivated(t, files, append([]string{helperEnv + "=activated", modeEnv + "=" + mode}, env...), exe)
	var rep activationReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("helper report %q: %v", out, err)
	}
	return rep
}

// cleanEnv is the environment without anything a test might have set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "BATON_SYSTEMD_TEST_") {
			env = append(env, kv)
		}
	}
	return env
}

// readReply reads the one line the service answers a connection with.
func readReply(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read reply: %v", err)
	}
	return strings.TrimSpace(line)
}
