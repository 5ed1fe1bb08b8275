package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/tests/sdns"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// The systemd tests run baton-demo under a real systemd 252, booted by
// tests/sdns in private namespaces: the unit files of systemd/, socket
// activation, "systemctl reload" running "baton upgrade --wait" under load,
// the fd store across "systemctl restart", the watchdog, and "systemctl
// stop". They skip where sdns cannot boot (not root); CI sets
// BATON_SDNS_REQUIRE=1, which makes that a failure.

// loadCmd is tests/loadcmd, built on first use: the load has to run inside
// the guest, whose ports live in its own network namespace.
var (
	loadCmdOnce sync.Once
	loadCmd     string
	loadCmdErr  error
)

// sdEnv is a booted guest with the demo's binaries in its directory.
type sdEnv struct {
	in     *sdns.Instance
	bin    string // the binary the units run and upgrades re-execute
	v1, v2 string // baton-demo v1 and v2, to install at bin
	cli    string // baton
	load   string // loadcmd
}

func bootSystemd(t *testing.T) *sdEnv {
	t.Helper()
	in := sdns.Boot(t, sdns.Options{})
	loadCmdOnce.Do(func() {
		loadCmd = filepath.Join(filepath.Dir(batonCLI), "loadcmd")
		loadCmdErr = demotest.Build("./tests/loadcmd", loadCmd, demotest.BuildOpts{Version: "test"})
	})
	if loadCmdErr != nil {
		t.Fatal(loadCmdErr)
	}
	e := &sdEnv{
		in:   in,
		v1:   in.Install(t, demoV1, "baton-demo-v1"),
		v2:   in.Install(t, demoV2, "baton-demo-v2"),
		cli:  in.Install(t, batonCLI, "baton"),
		load: in.Install(t, loadCmd, "loadcmd"),
	}
	e.bin = filepath.Join(filepath.Dir(e.v1), "baton-demo")
	upgradertest.Install(t, e.v1, e.bin)
	return e
}

// shippedUnit returns a unit file of systemd/ with the binaries' paths
// pointing into the guest's directory.
func (e *sdEnv) shippedUnit(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(demotest.Root(), "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "/usr/local/bin/baton-demo", e.bin)
	return strings.ReplaceAll(s, "/usr/local/bin/baton ", e.cli+" ")
}

// unit is a baton-demo service on addr with its own run directory, as the
// shipped one but with the socket it binds itself and with extra settings.
func (e *sdEnv) unit(name, addr, extra string) string {
	run := "/run/" + strings.TrimSuffix(name, ".service")
	return fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
NotifyAccess=main
RuntimeDirectory=%[1]s
ExecStart=%[2]s -addr %[3]s -pidfile %[4]s/pid -control %[4]s/control.sock -drain 10s
ExecReload=%[5]s upgrade --wait --socket %[4]s/control.sock
ExecStop=/bin/sh -c '[ -z "$MAINPID" ] || { kill -TERM $MAINPID && while kill -0 $MAINPID 2>/dev/null; do sleep 0.05; done; }'
TimeoutStopSec=20s
%[6]s
`, filepath.Base(run), e.bin, addr, run, e.cli, extra)
}

// unitState is what a test checks of a unit after each step.
type unitState struct {
	MainPID                    int
	ActiveState, SubState      string
	NRestarts, Result          string
	StatusText, NFileDescStore string
}

func (e *sdEnv) state(t *testing.T, unit string) unitState {
	t.Helper()
	p := e.in.Show(t, unit, "MainPID", "ActiveState", "SubState", "NRestarts", "Result", "StatusText", "NFileDescriptorStore")
	pid, _ := strconv.Atoi(p["MainPID"])
	return unitState{MainPID: pid, ActiveState: p["ActiveState"], SubState: p["SubState"], NRestarts: p["NRestarts"],
		Result: p["Result"], StatusText: p["StatusText"], NFileDescStore: p["NFileDescriptorStore"]}
}

func (s unitState) running() bool { return s.ActiveState == "active" && s.SubState == "running" }

// pidFile reads a pid file inside the guest.
func (e *sdEnv) pidFile(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(e.in.Exec(t, "cat", path))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

// root is GET / inside the guest.
type rootReply struct {
	Pid        int    `json:"pid"`
	Generation int    `json:"generation"`
	Version    string `json:"version"`
}

func (e *sdEnv) root(t *testing.T, port int) rootReply {
	t.Helper()
	out := e.in.Exec(t, "curl", "-sS", "--max-time", "10", fmt.Sprintf("http://127.0.0.1:%d/", port))
	var r rootReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("GET /: %q: %v", out, err)
	}
	return r
}

// listenSock is one listening socket as ss(8) shows it inside the guest.
type listenSock struct {
	ino  string
	pids map[int]bool // the processes holding it
}

var (
	ssIno = regexp.MustCompile(`\bino:(\d+)`)
	ssPid = regexp.MustCompile(`\bpid=(\d+)`)
)

func (e *sdEnv) listening(t *testing.T, port int) []listenSock {
	t.Helper()
	out := e.in.Exec(t, "ss", "-Hltnpe", fmt.Sprintf("sport = :%d", port))
	var socks []listenSock
	for _, line := range strings.Split(out, "\n") {
		m := ssIno.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := listenSock{ino: m[1], pids: map[int]bool{}}
		for _, p := range ssPid.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(p[1])
			s.pids[pid] = true
		}
		socks = append(socks, s)
	}
	return socks
}

// oneSocket checks that port has exactly one listening socket, held by
// holders, and returns its inode.
func (e *sdEnv) oneSocket(t *testing.T, port int, holders ...int) string {
	t.Helper()
	socks := e.listening(t, port)
	if len(socks) != 1 {
		t.Fatalf("port %d: %d listening sockets, want 1: %+v", port, len(socks), socks)
	}
	for _, pid := range holders {
		if !socks[0].pids[pid] {
			t.Errorf("port %d: socket held by %v, not by pid %d", port, socks[0].pids, pid)
		}
	}
	return socks[0].ino
}

// guestLoad is loadcmd running inside the guest.
type guestLoad struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stdin  io.WriteCloser
	out    *bufio.Reader
}

// startLoad starts the standard load on port and returns once it runs (its
// first request answered, which may be the one that starts the service).
// Extra arguments go to loadcmd (-rate, -clients).
func (e *sdEnv) startLoad(t *testing.T, port int, extra ...string) *guestLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	args := append([]string{"-url", fmt.Sprintf("http://127.0.0.1:%d", port)}, extra...)
	cmd := e.in.Command(ctx, e.load, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &guestLoad{cmd: cmd, cancel: cancel, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	// bounded by ctx: the command is killed and the read ends
	if line, err := l.out.ReadString('\n'); strings.TrimSpace(line) != "running" {
		cancel()
		cmd.Wait() // joins the copy of stderr
		t.Fatalf("loadcmd did not start: %q %v\n%s", line, err, stderr.String())
	}
	return l
}

// stop ends the load and returns what its clients saw.
func (l *guestLoad) stop(t *testing.T) *upgradertest.LoadReport {
	t.Helper()
	l.stdin.Close()
	line, err := l.out.ReadString('\n')
	if err != nil {
		t.Fatalf("loadcmd report: %v", err)
	}
	var r upgradertest.LoadReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("loadcmd report %q: %v", line, err)
	}
	l.cmd.Wait()
	t.Logf("load: %s", &r)
	return &r
}

// TestSystemdShippedUnits runs systemd/baton-demo.socket and .service as
// shipped, under load from inside the guest: the socket starts the demo,
// twenty "systemctl reload"s move MainPID to each new process without a
// failed request, a broken binary fails the reload and changes nothing, a
// SIGHUP sent by hand is followed too, a restart gets the socket back once,
// and the stop after all that is graceful.
func TestSystemdShippedUnits(t *testing.T) {
	e := bootSystemd(t)
	const unit, port, reloads = "baton-demo.service", 8080, 20
	const pidPath = "/run/baton-demo/baton-demo.pid"
	e.in.InstallUnit(t, "baton-demo.socket", e.shippedUnit(t, "baton-demo.socket"))
	e.in.InstallUnit(t, unit, e.shippedUnit(t, unit))
	e.in.Start(t, "baton-demo.socket")
	if s := e.state(t, unit); s.ActiveState != "inactive" {
		t.Fatalf("service %s before the first connection, want inactive", s.ActiveState)
	}
	sock := e.oneSocket(t, port, 1) // systemd's, before any demo runs

	var pids []int
	t.Run("the first connection starts the demo", func(t *testing.T) {
		l := e.startLoad(t, port) // its first request is that connection
		s := e.state(t, unit)
		if !s.running() || s.MainPID == 0 {
			t.Fatalf("after the first request: %+v", s)
		}
		pids = append(pids, s.MainPID)
		if got := e.oneSocket(t, port, 1, s.MainPID); got != sock {
			t.Errorf("the demo listens on socket %s, not systemd's %s", got, sock)
		}
		if s.StatusText != fmt.Sprintf("serving (generation 0, pid %d)", s.MainPID) {
			t.Errorf("StatusText %q", s.StatusText)
		}

		t.Run("reloads under load", func(t *testing.T) {
			for k := 1; k <= reloads; k++ {
				if k == reloads/2+1 {
					upgradertest.Install(t, e.v2, e.bin) // a new release half way
				}
				e.in.Reload(t, unit) // returns when the old process has exited
				s := e.state(t, unit)
				if !s.running() || s.NRestarts != "0" {
					t.Fatalf("reload %d: %+v", k, s)
				}
				if s.MainPID == pids[len(pids)-1] {
					t.Fatalf("reload %d: MainPID still %d", k, s.MainPID)
				}
				if pid := e.pidFile(t, pidPath); pid != s.MainPID {
					t.Fatalf("reload %d: MainPID %d, pid file %d", k, s.MainPID, pid)
				}
				pids = append(pids, s.MainPID)
			}
		})
		r := l.stop(t)
		assertNoFailures(t, r)
		gens := map[int]bool{}
		for _, pid := range pids {
			gens[pid] = true
		}
		for pid := range r.Pids {
			if !gens[pid] {
				t.Errorf("a reply came from pid %d, which was never MainPID", pid)
			}
		}
		if len(r.Pids) < reloads {
			t.Errorf("replies came from %d generations; want the %d MainPIDs", len(r.Pids), len(pids))
		}
	})
	if t.Failed() {
		return
	}
	last := pids[len(pids)-1]
	if got := e.root(t, port); got.Pid != last || got.Generation != reloads || got.Version != "v2" {
		t.Errorf("after %d reloads: %+v, want pid %d generation %d v2", reloads, got, last, reloads)
	}
	if got := e.oneSocket(t, port, 1, last); got != sock {
		t.Errorf("after the reloads the socket is %s, want systemd's %s", got, sock)
	}
	j := e.in.UnitJournal(t, unit)
	for _, c := range []struct {
		what string
		want int
	}{
		{"systemd[1]: Reloaded ", reloads},
		{"msg=\"systemd: handed the main PID over\"", reloads},
		{"msg=\"systemd: ready, main process of the service\"", reloads + 1},
		{"msg=\"upgrade succeeded: new process is ready\"", reloads},
		{"reception only permitted", 0}, // nothing refused under NotifyAccess=main
	} {
		if got := strings.Count(j, c.what); got != c.want {
			t.Errorf("journal: %d lines with %q, want %d", got, c.what, c.want)
		}
	}

	t.Run("a broken binary fails the reload and changes nothing", func(t *testing.T) {
		upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 3\n"), e.bin, 0o755)
		out, err := e.in.Output("systemctl", "reload", unit)
		if err == nil {
			t.Fatalf("reload with a broken binary succeeded: %s", out)
		}
		s := e.state(t, unit)
		if !s.running() || s.MainPID != last || !strings.HasPrefix(s.StatusText, "upgrade failed: ") {
			t.Errorf("after the failed reload: %+v, want running, MainPID %d, STATUS upgrade failed", s, last)
		}
		if got := e.root(t, port); got.Pid != last {
			t.Errorf("served by %d after the failed reload, want %d", got.Pid, last)
		}
		if j := e.in.UnitJournal(t, unit); !strings.Contains(j, "exit status 3") {
			t.Errorf("the journal does not say why the upgrade failed")
		}
		upgradertest.Install(t, e.v2, e.bin)
	})

	t.Run("a SIGHUP sent by hand is followed", func(t *testing.T) {
		// RELOADING=1 puts the running unit into "reloading"; MAINPID=
		// and the new process's READY=1 end it
		e.in.Exec(t, "systemctl", "kill", "--kill-who=main", "--signal=HUP", unit)
		sdns.Poll(t, 30*time.Second, "MainPID to follow the upgrade", func() bool {
			s := e.state(t, unit)
			return s.MainPID != last && s.running() && e.pidFile(t, pidPath) == s.MainPID
		})
		last = e.state(t, unit).MainPID
	})

	t.Run("restart gets the socket back once", func(t *testing.T) {
		// the socket unit and the fd store (FDSTORE=1, FDNAME=http) both
		// hold it: the demo gets it twice and adopts it once
		if n := e.state(t, unit).NFileDescStore; n != "1" {
			t.Errorf("NFileDescriptorStore=%s, want 1 (stored once, however many generations)", n)
		}
		e.in.Restart(t, unit)
		s := e.state(t, unit)
		if !s.running() || s.MainPID == last {
			t.Fatalf("after restart: %+v", s)
		}
		if got := e.root(t, port); got.Generation != 0 || got.Pid != s.MainPID {
			t.Errorf("after restart: %+v", got)
		}
		if got := e.oneSocket(t, port, 1, s.MainPID); got != sock {
			t.Errorf("after restart the socket is %s, want %s", got, sock)
		}
		if !strings.Contains(e.in.UnitJournal(t, unit), "dropped a second descriptor of an activated socket") {
			t.Errorf("the demo did not get the socket twice")
		}
		last = s.MainPID
		for range 2 {
			e.in.Reload(t, unit)
		}
		last = e.state(t, unit).MainPID
	})

	t.Run("stop after reloads is graceful", func(t *testing.T) {
		e.in.StopUnit(t, unit)
		s := e.state(t, unit)
		if s.ActiveState != "inactive" || s.Result != "success" {
			t.Errorf("after stop: %+v", s)
		}
		j := e.in.UnitJournal(t, unit)
		if strings.Contains(j, "SIGKILL") {
			t.Errorf("something was SIGKILLed:\n%s", grepLines(j, "SIGKILL"))
		}
		if !regexp.MustCompile(`baton-demo\[` + strconv.Itoa(last) + `\]: .*msg=exiting`).MatchString(j) {
			t.Errorf("the last main process %d did not drain and exit", last)
		}
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSystemdFDStoreRestart restarts a service that binds its own socket,
// under load: with the fd store the socket, and the connections queued on
// it, outlive the process and no client is refused; without it they are.
func TestSystemdFDStoreRestart(t *testing.T) {
	e := bootSystemd(t)
	tests := []struct {
		name        string
		port        int
		extra       string
		wantRefused bool
	}{
		{name: "fd store", port: 8090, extra: "FileDescriptorStoreMax=4\nEnvironment=FDSTORE=4"},
		{name: "no fd store", port: 8091, wantRefused: true},
	}
	for k, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit := fmt.Sprintf("store%d.service", k)
			e.in.InstallUnit(t, unit, e.unit(unit, fmt.Sprintf("127.0.0.1:%d", tt.port), tt.extra))
			e.in.Start(t, unit)
			defer e.in.Output("systemctl", "stop", unit)
			first := e.state(t, unit)
			// one upgrade first: the restart then stops an "alien" main
			// process, and a generation that stored nothing new
			e.in.Reload(t, unit)
			before := e.state(t, unit)
			sock := e.oneSocket(t, tt.port, before.MainPID)
			stored := "0"
			if !tt.wantRefused {
				stored = "1"
			}
			if before.NFileDescStore != stored || before.MainPID == first.MainPID {
				t.Fatalf("before restart: %+v (first %+v), want %s stored", before, first, stored)
			}

			l := e.startLoad(t, tt.port)
			e.in.Restart(t, unit) // returns at the new process's READY=1
			after := e.state(t, unit)
			// a few hundred requests on the new process before the load stops
			for range 3 {
				e.root(t, tt.port)
			}
			r := l.stop(t)
			if !after.running() || after.MainPID == before.MainPID {
				t.Fatalf("after restart: %+v", after)
			}
			refused := r.Failures[upgradertest.Refused]
			if tt.wantRefused {
				if refused == 0 {
					t.Errorf("no connection refused without the fd store: the test cannot tell: %s", r)
				}
				return
			}
			assertNoFailures(t, r)
			if got := e.oneSocket(t, tt.port, after.MainPID); got != sock {
				t.Errorf("after restart the socket is %s, want the stored %s", got, sock)
			}
			if j := e.in.UnitJournal(t, unit); !strings.Contains(j, fmt.Sprintf(`msg="systemd: adopted activated listener" name=127.0.0.1_%d`, tt.port)) {
				t.Errorf("the restarted demo did not adopt the stored socket by its name")
			}
		})
	}
}

// TestSystemdWatchdog: a healthy unit with WatchdogSec= survives upgrades
// (each main process pings, from its READY=1 to its handover), and one whose
// main process hangs is killed and restarted.
func TestSystemdWatchdog(t *testing.T) {
	e := bootSystemd(t)
	const unit, port = "wd.service", 8100
	e.in.InstallUnit(t, unit, e.unit(unit, fmt.Sprintf("127.0.0.1:%d", port),
		"WatchdogSec=2s\nRestart=on-failure\nRestartSec=100ms"))
	e.in.Start(t, unit)
	defer e.in.Output("systemctl", "stop", unit)

	var main int
	t.Run("healthy through upgrades", func(t *testing.T) {
		for range 3 {
			e.in.Reload(t, unit)
		}
		main = e.state(t, unit).MainPID
		// ExecMainStartTimestamp is when systemd took the last MAINPID=;
		// wait for pings two WatchdogSec after it, all from the last
		// process, the old ones having exited
		start := showUsec(t, e.in, unit, "ExecMainStartTimestampMonotonic")
		sdns.Poll(t, 15*time.Second, "watchdog pings 4s after the last handover", func() bool {
			return showUsec(t, e.in, unit, "WatchdogTimestampMonotonic") > start+4_000_000
		})
		if s := e.state(t, unit); !s.running() || s.MainPID != main || s.NRestarts != "0" {
			t.Errorf("after the upgrades: %+v", s)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("a hung main process is restarted", func(t *testing.T) {
		e.in.Exec(t, "kill", "-STOP", strconv.Itoa(main))
		sdns.Poll(t, 20*time.Second, "systemd to restart the hung service", func() bool {
			s := e.state(t, unit)
			return s.NRestarts == "1" && s.running() && s.MainPID != main
		})
		if j := e.in.UnitJournal(t, unit); !strings.Contains(j, "Watchdog timeout") {
			t.Errorf("journal has no watchdog timeout")
		}
		if got := e.root(t, port); got.Generation != 0 || got.Pid != e.state(t, unit).MainPID {
			t.Errorf("after the restart: %+v", got)
		}
	})
}

func showUsec(t *testing.T, in *sdns.Instance, unit, prop string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(in.Show(t, unit, prop)[prop], 10, 64)
	if err != nil {
		t.Fatalf("%s %s: %v", unit, prop, err)
	}
	return v
}

// TestSocketActivateDemo lets systemd-socket-activate, not systemd, pass
// baton-demo its socket (LISTEN_FDS=1, LISTEN_FDNAMES=http, no
// NOTIFY_SOCKET): the demo takes it with -addr http on the first connection,
// and an upgrade hands the same socket on.
func TestSocketActivateDemo(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv(sdns.RequireEnv) == "1" {
			t.Fatal("systemd-socket-activate not installed")
		}
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "baton-demo")
	upgradertest.Install(t, demoV1, bin)
	pidFile := filepath.Join(dir, "demo.pid")
	logPath := filepath.Join(dir, "demo.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	// The tool rejects port 0: take a free port, which another process may
	// take in between, hence the bounded retry.
	var (
		cmd  *exec.Cmd
		addr string
	)
	for attempt := 1; cmd == nil; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		c := exec.Command(tool, "-l", addr, "--fdname=http", bin, "-addr", "http", "-pidfile", pidFile)
		c.Stdout, c.Stderr = logFile, logFile
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		// the tool prints "Listening on …" once bound, or exits
		bound := func() bool {
			b, _ := os.ReadFile(logPath)
			return strings.Contains(string(b), "Listening on ")
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		sdns.Poll(t, 10*time.Second, "systemd-socket-activate to bind or fail", func() bool {
			select {
			case <-exited:
				return true
			default:
				return bound()
			}
		})
		select {
		case <-exited:
			if attempt == 3 {
				b, _ := os.ReadFile(logPath)
				t.Fatalf("systemd-socket-activate failed 3 times:\n%s", b)
			}
			continue
		default:
		}
		cmd = c
		t.Cleanup(func() {
			// the tool has exec'd the demo: its pid is the first
			// generation's; later ones are in the pid file
			if b, err := os.ReadFile(pidFile); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			c.Process.Kill()
			<-exited
		})
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() rootReply {
		t.Helper()
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r rootReply
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	inode := func(pid int) string {
		t.Helper()
		out, err := exec.Command("ss", "-Hltnpe", "sport = :"+addr[strings.LastIndexByte(addr, ':')+1:]).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), fmt.Sprintf("pid=%d,", pid)) {
			t.Fatalf("pid %d does not hold the socket: %s", pid, out)
		}
		m := ssIno.FindStringSubmatch(string(out))
		if m == nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Fatalf("want one listening socket on %s: %s", addr, out)
		}
		return m[1]
	}

	first := get() // starts the demo
	if first.Pid != cmd.Process.Pid || first.Generation != 0 {
		t.Fatalf("first reply %+v, want the exec'd tool's pid %d", first, cmd.Process.Pid)
	}
	sock := inode(first.Pid)
	out, err := exec.Command(batonCLI, "upgrade", "--wait", "--pidfile", pidFile).CombinedOutput()
	if err != nil {
		t.Fatalf("baton upgrade: %v\n%s", err, out)
	}
	second := get()
	if second.Pid == first.Pid || second.Generation != 1 {
		t.Fatalf("after the upgrade: %+v (before %+v)", second, first)
	}
	if got := inode(second.Pid); got != sock {
		t.Errorf("after the upgrade the socket is %s, want the activated %s", got, sock)
	}
	b, _ := os.ReadFile(logPath)
	if !regexp.MustCompile(`msg="systemd: adopted activated listener" name=http addr=` + regexp.QuoteMeta(addr)).Match(b) {
		t.Errorf("the demo did not adopt the socket by its name:\n%s", b)
	}
}
