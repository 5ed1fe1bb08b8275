package tests

// Hardening of the lifecycle (issue 13, items 1, 2, 12, 13 and 14): what
// an operator or a service author met on real processes, each reproduced
// here before it was fixed. RELIABILITY.md lists them.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// assertControlAnswers checks that sock is a Unix socket file on which the
// baton command gets an answer.
func assertControlAnswers(t *testing.T, sock string) {
	t.Helper()
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatalf("control socket: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", sock, fi.Mode())
	}
	if out, errOut, code := baton(t, nil, "status", "--socket", sock); code != 0 {
		t.Fatalf("baton status exit %d: %s%s", code, out, errOut)
	}
}

// TestFailedChildKeepsParentUnixSockets (item 1): a new process that fails
// after taking its listeners (it rejects the state, or is an older binary
// refusing a newer state) must not unlink the Unix sockets it inherited:
// the old process still serves them. Only the last owner removes them.
func TestFailedChildKeepsParentUnixSockets(t *testing.T) {
	tests := []struct {
		name    string
		bin     string   // the first generation
		env     []string // its environment
		install string   // the binary of the failing attempt, if another
		again   string   // the binary of the good attempt after it
		wantErr string
	}{
		{name: "new-reject", bin: demoFault, env: []string{upgradertest.Fault(upgradertest.FaultNewReject, 1, 1)},
			again: demoFault, wantErr: "upgrader: new process rejected the state"},
		// v1 reads kv schemas 1 and 2 (2 by its down-migration), not 3.
		{name: "rollback-v3-to-v1", bin: demoV3, install: demoV1, again: demoV3,
			wantErr: "upgrader: new process rejected the state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(controlDir(t), "control.sock")
			p := demotest.StartEnv(t, tt.env, tt.bin, t.TempDir(), "-control", sock)
			old := p.Pid(t)
			assertControlAnswers(t, sock)
			if tt.install != "" {
				upgradertest.Install(t, tt.install, p.Bin)
			}
			u := p.Upgrade(t)
			if !strings.Contains(u.Err, tt.wantErr) {
				t.Fatalf("upgrade error %q, want one containing %q", u.Err, tt.wantErr)
			}
			// The failed child has exited by the time the old process
			// logs its verdict; what it removed is gone now.
			for _, pid := range p.Logs.Pids() {
				if pid != old {
					if err := upgradertest.WaitExit(pid, 10*time.Second); err != nil {
						t.Fatal(err)
					}
				}
			}
			assertControlAnswers(t, sock)
			if got := p.Root(t); got.Pid != old {
				t.Fatalf("pid %d serves, want the old %d", got.Pid, old)
			}

			// The next, good, upgrade still finds the socket, and so does
			// the CLI afterwards.
			upgradertest.Install(t, tt.again, p.Bin)
			u = p.Upgrade(t)
			if u.Err != "" {
				t.Fatalf("second upgrade: %s", u.Err)
			}
			if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			assertControlAnswers(t, sock)

			// A clean stop of the last owner removes it.
			stopAndWait(t, p)
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("control socket after the last owner stopped: %v, want it removed", err)
			}
		})
	}
}

// TestOldKilledAfterFreeze (item 2): the old process is SIGKILLed after it
// froze its participants and before it sent the snapshot
// (old-kill-after-freeze). The new process must see that its parent is
// gone and serve: with the state file if one is configured (the last
// durable snapshot: task runs since then are done again, none is lost),
// or, without one, with the documented empty start. It never exits with
// the listeners in hand.
func TestOldKilledAfterFreeze(t *testing.T) {
	for _, withFile := range []bool{true, false} {
		name := "no-state-file"
		if withFile {
			name = "state-file"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var args []string
			if withFile {
				args = []string{"-state-file", filepath.Join(dir, "demo.state"), "-state-file-interval", "200ms"}
			}
			s := startServiceIn(t, dir, demoFault, []string{upgradertest.Fault(upgradertest.FaultOldKillAfterFreeze, 0, 1)}, args...)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			if withFile {
				waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "state file written", Pid: old})
			}
			want := "previous generation died before handing over its state: starting with no state"
			if withFile {
				want = "previous generation died before handing over its state: restoring the state file"
			}
			newPid := upgradeKillingOld(t, s, old, upgradertest.FaultOldKillAfterFreeze, want, func(newPid, mark int) {
				if withFile {
					waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "state restored from file", Pid: newPid})
				}
			})

			// The orphaned generation upgrades as usual.
			last := upgradeOK(t, s)
			waitTaskRuns(t, s, 2)
			stopAndWait(t, s.Proc)
			c := checkTaskLog(t, s.taskLog)
			t.Logf("task log: %s", c)
			if withFile && c.gaps != 0 {
				// Restored from the file: runs since its last write run
				// again (repeats), none is lost.
				t.Errorf("task runs lost: %s; first: %s", c, c.example)
			}
			for _, pid := range []int{old, newPid, last} {
				if c.byPid[pid] == 0 {
					t.Errorf("no task ran in pid %d; runs by pid: %v", pid, c.byPid)
				}
			}
			assertOnlyAlive(t, s)
		})
	}
}

// TestNothingLeaksIntoSubprocesses (item 12): a subprocess started by any
// generation finds neither tableflip's TABLEFLIP_HAS_PARENT_7DIU3 nor
// BATON_HANDOFF in its environment (a tableflip or baton program would
// believe it has a parent and fail), nor any descriptor of the upgrader
// (the ready pipe and the parent-exit pipe, fds 3 and 4, were inherited
// without close-on-exec): before Ready and after.
func TestNothingLeaksIntoSubprocesses(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "spawnsvc-bin")
	if err := demotest.Build("./tests/spawnsvc", bin, demotest.BuildOpts{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	p := demotest.StartCmd(t, bin, dir, "-pidfile", filepath.Join(dir, "demo.pid"))
	spawned := func(pid, gen int, step string) upgradertest.Line {
		t.Helper()
		for _, l := range p.Logs.Lines(0) {
			if l.Msg == "spawned" && l.Pid == pid && l.Fields["step"] == step {
				return l
			}
		}
		t.Fatalf("generation %d (pid %d) logged no subprocess at %s:\n%s", gen, pid, step, p.Logs)
		return upgradertest.Line{}
	}
	// What the first generation's subprocess sees when it starts is the
	// test environment's (a descriptor the test runner left open without
	// close-on-exec reaches every process): not the upgrader's.
	baseline := map[string]bool{}
	for _, fd := range strings.Split(spawned(p.Pid(t), 0, "new").Fields["fds"], ",") {
		baseline[fd] = true
	}
	t.Logf("descriptors inherited from the test environment: %v", baseline)
	check := func(pid, gen int) {
		t.Helper()
		for _, step := range []string{"new", "ready"} {
			line := spawned(pid, gen, step)
			var fds []string
			for _, fd := range strings.Split(line.Fields["fds"], ",") {
				if !baseline[fd] {
					fds = append(fds, fd)
				}
			}
			if line.Fields["env"] != "" || len(fds) != 0 {
				t.Errorf("generation %d at %s: the subprocess inherited environment %q and fds %q",
					gen, step, line.Fields["env"], fds)
			}
		}
	}
	check(p.Pid(t), 0)
	for gen := 1; gen <= 2; gen++ {
		old := p.Pid(t)
		mark := p.Logs.Len()
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		line, err := p.Logs.WaitFrom(mark, 30*time.Second, upgradertest.Match{Msg: "upgraded", Pid: old},
			upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
		if err != nil || line.Msg != "upgraded" {
			t.Fatalf("upgrade %d: %v %q\n%s", gen, err, line.Raw, p.Logs)
		}
		newPid, _ := strconv.Atoi(line.Fields["new_pid"])
		if _, err := p.Logs.WaitFrom(mark, 10*time.Second, upgradertest.Match{Msg: "serving", Pid: newPid}); err != nil {
			t.Fatal(err)
		}
		check(newPid, gen)
		if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPidFileRemovedOnStop (item 13): a clean stop removes the pid file,
// but only the process it names: the old process of an upgrade leaves the
// new one's file alone.
func TestPidFileRemovedOnStop(t *testing.T) {
	p := demotest.Start(t, demoV1)
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade: %s", u.Err)
	}
	if err := upgradertest.WaitExit(u.OldPid, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.Pid(t); got != u.NewPid {
		t.Fatalf("after the old process exited the pid file names %d, want the new %d", got, u.NewPid)
	}
	stopAndWait(t, p)
	if _, err := os.Stat(p.PIDFile); !os.IsNotExist(err) {
		b, _ := os.ReadFile(p.PIDFile)
		t.Fatalf("pid file after a clean stop: %v (holds %q), want it removed", err, b)
	}
}

// TestCLIRefusesStalePidFile (item 13): a pid file left behind names a
// pid that has since been reused by another process, started after the
// file was written. `baton upgrade --pidfile` must not signal it (SIGHUP
// would kill it), and `baton status --pidfile` must not call it the
// service.
func TestCLIRefusesStalePidFile(t *testing.T) {
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	pidFile := filepath.Join(t.TempDir(), "demo.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Written an hour before the process that now has the pid started.
	hourAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(pidFile, hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := baton(t, nil, "upgrade", "--pidfile", pidFile)
	t.Logf("baton upgrade: exit %d: %s%s", code, out, errOut)
	if code == 0 {
		t.Errorf("baton upgrade signalled a pid the stale pid file names: exit 0")
	}
	if !upgradertest.Alive(other.Process.Pid) {
		t.Fatalf("pid %d, which is not the service, was signalled and died", other.Process.Pid)
	}
	out, errOut, code = baton(t, nil, "status", "--pidfile", pidFile)
	t.Logf("baton status: exit %d: %s%s", code, out, errOut)
	if code == 0 {
		t.Errorf("baton status called pid %d the service: exit 0", other.Process.Pid)
	}

	// The pid file of a running service is not stale.
	p := demotest.Start(t, demoV1)
	old := p.Pid(t)
	if out, errOut, code := baton(t, nil, "status", "--pidfile", p.PIDFile); code != 0 {
		t.Fatalf("baton status --pidfile of a running service: exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := baton(t, nil, "upgrade", "--wait", "--pidfile", p.PIDFile); code != 0 {
		t.Fatalf("baton upgrade --pidfile of a running service: exit %d: %s%s", code, out, errOut)
	}
	if got := p.Pid(t); got == old {
		t.Fatalf("the pid file still names %d after the upgrade", old)
	}
}

// TestStateFileDirMissing (item 14): a state file in a directory that does
// not exist is refused at start, saying which, not found out at the stop.
func TestStateFileDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	path := filepath.Join(dir, "demo.state")
	cmd := exec.Command(demoV1, "-addr", "127.0.0.1:0", "-state-file", path)
	cmd.Env = upgradertest.CleanEnv()
	out, served, err := serveOrExit(t, cmd)
	t.Logf("served %v, exit %v:\n%s", served, err, out)
	if served {
		t.Fatalf("baton-demo started with -state-file in a missing directory")
	}
	if err == nil || !strings.Contains(out, dir) {
		t.Fatalf("exit %v, want a failure naming %s", err, dir)
	}
}

// TestUpgradeDeadlineAtReady (item 4): `baton upgrade --timeout D` against
// a new process that becomes ready about 1 s after it restored
// (new-slow-ready), with D on either side of that. Whatever the timing,
// exactly one outcome holds: the upgrade is reported done, the new process
// serves and the old one exits; or it is reported failed, the new process
// is gone and the old one serves. Never a success whose new process was
// killed.
func TestUpgradeDeadlineAtReady(t *testing.T) {
	timeouts := []time.Duration{300 * time.Millisecond, 1000 * time.Millisecond, 1005 * time.Millisecond,
		1020 * time.Millisecond, 1100 * time.Millisecond, 5 * time.Second}
	var faults []string
	for i := range timeouts {
		faults = append(faults, fmt.Sprintf("%s@1.%d", upgradertest.FaultNewSlowReady, i+1))
	}
	sock := filepath.Join(controlDir(t), "control.sock")
	p := demotest.StartEnv(t, []string{"BATON_FAULT=" + strings.Join(faults, ",")}, demoFault, t.TempDir(), "-control", sock)
	old := p.Pid(t)
	for _, timeout := range timeouts {
		mark := p.Logs.Len()
		out, errOut, code := baton(t, nil, "upgrade", "--socket", sock, "--wait", "--timeout", timeout.String())
		hello, err := p.Logs.WaitFrom(mark, 5*time.Second, upgradertest.Match{Msg: "new process said hello", Pid: old})
		if err != nil {
			t.Fatalf("timeout %v: %v\n%s", timeout, err, p.Logs)
		}
		child, _ := strconv.Atoi(hello.Fields["child_pid"])
		t.Logf("timeout %v: exit %d: %s%s", timeout, code, strings.TrimSpace(out), strings.TrimSpace(errOut))
		if code == 0 {
			if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
				t.Fatalf("timeout %v: reported done, but the old process: %v", timeout, err)
			}
			if got := p.Root(t); got.Pid != child {
				t.Fatalf("timeout %v: reported done, but pid %d serves, not the new %d", timeout, got.Pid, child)
			}
			if timeout < time.Second {
				t.Errorf("timeout %v: done, though the new process asks to become ready only after 1 s", timeout)
			}
			return
		}
		if err := upgradertest.WaitExit(child, 10*time.Second); err != nil {
			t.Fatalf("timeout %v: reported failed, but the new process: %v", timeout, err)
		}
		if got := p.Root(t); got.Pid != old {
			t.Fatalf("timeout %v: reported failed, but pid %d serves, not the old %d", timeout, got.Pid, old)
		}
		if timeout == 5*time.Second {
			t.Fatalf("timeout %v: the upgrade failed", timeout)
		}
	}
}
