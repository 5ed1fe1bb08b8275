package tests

// Reliability cases in which a process of the upgrade fails, is killed or
// is triggered again mid-upgrade; see reliability_helpers_test.go.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/sdns"
	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestNewProcessFaults: the new process fails at each step of its start.
// The old process must keep serving with nothing lost, its participants
// thawed where it had frozen them, with no process, fd or goroutine left
// behind; a good upgrade afterwards must hand everything over.
func TestNewProcessFaults(t *testing.T) {
	notExecutable := func(t *testing.T, path string) {
		upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 0\n"), path, 0o644)
	}
	unreadable := func(t *testing.T, path string) { upgradertest.Install(t, demoV3, path) }
	tests := []struct {
		name   string
		fault  upgradertest.FaultStep // made to fail in attempt 1 of generation 1
		faults []string               // or these BATON_FAULT entries (step@gen.n)
		// failStep, if set, is the step the failure is counted under in
		// baton_upgrade_failures_total.
		failStep string
		args     []string
		install  func(t *testing.T, path string) // replaces the binary for the failing attempt
		wantErr  string
		// wantLog is what the old process logs about its tasks: frozen
		// then thawed, or refused before freezing. Empty: it never got
		// that far.
		wantLog string
	}{
		{name: "new-start", fault: upgradertest.FaultNewStart,
			wantErr: "upgrade failed at start: upgrader: new process exited before it was ready: exit status 7"},
		{name: "new-listening", fault: upgradertest.FaultNewListening,
			wantErr: "upgrader: new process exited before it was ready: exit status 7"},
		{name: "new-restoring", fault: upgradertest.FaultNewRestoring,
			wantErr: "upgrade failed at state", wantLog: "participants thawed: carrying on"},
		{name: "new-reject", fault: upgradertest.FaultNewReject,
			wantErr: "upgrader: new process rejected the state: rejected by fault injection", wantLog: "participants thawed: carrying on"},
		{name: "new-hang", fault: upgradertest.FaultNewHang, args: []string{"-upgrade-timeout", "1500ms"},
			wantErr: "upgrader: new process was not ready in time", wantLog: "participants thawed: carrying on"},
		{name: "state-unreadable", install: unreadable,
			wantErr: "upgrader: new process rejected the state: the new binary cannot read this process's state",
			wantLog: "handoff: refusing to hand over state"},
		{name: "not-executable", install: notExecutable,
			wantErr: "upgrade failed at start: upgrader: new process could not be started"},
		// A panic in a participant's callback (a nil-map write in demo.kv),
		// in the old process or the new one: the upgrade fails naming the
		// participant, the old process thaws and serves on.
		{name: "panic-freeze", faults: []string{"panic-freeze@0.1"}, failStep: "state:demo.kv",
			wantErr: `upgrade failed at state:demo.kv`,
			wantLog: "handoff: a participant panicked; the upgrade fails and this process carries on"},
		{name: "panic-capture", faults: []string{"panic-capture@0.1"}, failStep: "state:demo.kv",
			wantErr: `participant "demo.kv" panicked in Capture`, wantLog: "participants thawed: carrying on"},
		{name: "panic-thaw", faults: []string{"new-reject@1.1", "panic-thaw@0.1"},
			wantErr: "rejected by fault injection", wantLog: "thaw: a participant panicked; the others were thawed"},
		{name: "panic-restore", faults: []string{"panic-restore@1.1"},
			wantErr: `participant "demo.kv" panicked in Restore`, wantLog: "participants thawed: carrying on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.fault != "" {
				env = []string{upgradertest.Fault(tt.fault, 1, 1)}
			}
			if tt.faults != nil {
				env = []string{"BATON_FAULT=" + strings.Join(tt.faults, ",")}
			}
			s := startService(t, demoFault, env, tt.args...)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			mark := s.Logs.Len()
			r1 := underLoad(t, standardLoad(s.URL), func() {
				waitTaskRuns(t, s, 2)
				if tt.install != nil {
					tt.install(t, s.Bin)
				}
				u := s.Upgrade(t)
				t.Logf("upgrade error: %s", u.Err)
				if !strings.Contains(u.Err, tt.wantErr) {
					t.Fatalf("upgrade error %q, want one containing %q", u.Err, tt.wantErr)
				}
				if tt.wantLog != "" {
					if _, err := s.Logs.WaitFrom(mark, 5*time.Second, upgradertest.Match{Msg: tt.wantLog, Pid: old}); err != nil {
						t.Errorf("old process: %v", err)
					}
				}
				if got := s.Root(t); got.Pid != old {
					t.Fatalf("pid %d serves after the failure, want the old %d", got.Pid, old)
				}
				if tt.failStep != "" {
					series := `baton_upgrade_failures_total{step="` + tt.failStep + `"}`
					if got := scrape(t, s.URL)[series]; got != "1" {
						t.Errorf("%s = %q, want 1", series, got)
					}
				}
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r1)
			assertOnlyAlive(t, s, old)
			assertPIDFileAlone(t, s, old)
			assertUsageSettles(t, s, old, before)

			// The good upgrade: attempt 2 has no fault.
			if tt.install != nil {
				upgradertest.Install(t, demoFault, s.Bin)
			}
			var newPid int
			r2 := underLoad(t, standardLoad(s.URL), func() {
				newPid = upgradeOK(t, s)
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r2)
			assertStateIntact(t, s.Proc, &upgradertest.LoadReport{Gets: r1.Gets + r2.Gets}, 1)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, newPid)
			assertOnlyAlive(t, s)
		})
	}
}

// hup sends SIGHUP to pid and returns the log index to wait from.
func hup(t *testing.T, s *service, pid int) int {
	t.Helper()
	mark := s.Logs.Len()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return mark
}

// failedBefore counts the failed requests that started before at.
func failedBefore(r *upgradertest.LoadReport, at time.Time) int {
	n := 0
	for _, s := range r.Samples {
		if s.Failed && s.Start.Before(at) {
			n++
		}
	}
	return n
}

// assertFailureKinds checks that every failure the clients saw is of one of
// kinds.
func assertFailureKinds(t *testing.T, r *upgradertest.LoadReport, kinds ...string) {
	t.Helper()
	for k, n := range r.Failures {
		if n > 0 && !slices.Contains(kinds, k) {
			t.Errorf("%d requests failed with %q; only %v are expected here: %q", n, k, kinds, r.Errors)
		}
	}
}

// assertRefused checks that nothing listens on addr any more.
func assertRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// TestNewProcessCrashesAfterReady: the new process reports ready, so the
// old one hands over for good and drains, and then the new one crashes
// (new-crash-late). Nothing can take the service back: the old process has
// closed its listeners and frozen its tasks for good. The test checks
// exactly what happens, then restarts the service as systemd's
// Restart=on-failure would, from the state file the old process wrote
// every 500 ms.
func TestNewProcessCrashesAfterReady(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-state-file", filepath.Join(dir, "demo.state"), "-state-file-interval", "500ms"}
	s := startServiceIn(t, dir, demoFault, []string{upgradertest.Fault(upgradertest.FaultNewCrashLate, 1, 1)}, args...)
	old := s.Pid(t)
	waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "state file written", Pid: old})
	waitTaskRuns(t, s, 2)

	cfg := standardLoad(s.URL)
	cfg.Latencies = true
	var triggered, handover, crashed time.Time
	var newPid int
	r := underLoad(t, cfg, func() {
		waitTaskRuns(t, s, 1)
		triggered = time.Now()
		mark := hup(t, s, old)
		line := waitLine(t, s, mark, 30*time.Second,
			upgradertest.Match{Msg: "upgraded", Pid: old}, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
		if line.Msg != "upgraded" {
			t.Fatalf("the upgrade failed: %s", line.Fields["err"])
		}
		handover = time.Now()
		newPid, _ = strconv.Atoi(line.Fields["new_pid"])
		if err := upgradertest.WaitExit(newPid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		crashed = time.Now()
		// The old process finishes its drain and exits: it cannot
		// thaw what it handed over.
		if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "exiting", Pid: old})
		assertRefused(t, s.Addr)
		// Let the clients meet the outage.
		time.Sleep(200 * time.Millisecond)
	})
	t.Logf("trigger at +%v, handover seen at +%v, crash seen at +%v; clients saw: %v",
		triggered.Sub(r.Samples[0].Start).Round(time.Millisecond), handover.Sub(r.Samples[0].Start).Round(time.Millisecond),
		crashed.Sub(r.Samples[0].Start).Round(time.Millisecond), r.Failures)
	if n := failedBefore(r, triggered); n > 0 {
		t.Errorf("%d requests sent before the upgrade failed", n)
	}
	if r.Failures[upgradertest.Refused] == 0 {
		t.Errorf("no request was refused after the crash: %v", r)
	}
	// Connections queued on the socket when the new process died are
	// reset with it; after that, connections are refused.
	assertFailureKinds(t, r, upgradertest.Refused, upgradertest.Reset, upgradertest.EOF)
	assertOnlyAlive(t, s)

	// The restart, as Restart=on-failure would: the state comes from the
	// last periodic write, so the tasks repeat the runs made since then
	// and lose none.
	q := startServiceIn(t, dir, demoFault, nil, args...)
	waitLine(t, q, 0, 5*time.Second, upgradertest.Match{Msg: "state restored from file"})
	waitTaskRuns(t, q, 2)
	stopAndWait(t, q.Proc)
	c := checkTaskLog(t, s.taskLog)
	t.Logf("task log: %s", c)
	if c.gaps != 0 {
		t.Errorf("task runs lost: %s; first: %s", c, c.example)
	}
	// At most the runs of one write interval (5) plus the handoff.
	if c.repeats > 8*relTasks {
		t.Errorf("%d runs repeated after the restart; the 500 ms write interval allows about %d", c.repeats, 6*relTasks)
	}
	t.Logf("runs repeated after the restart (made after the last state file write): %d, %.1f per task", c.repeats, float64(c.repeats)/relTasks)
	assertOnlyAlive(t, q)
}

// TestOldProcessFaults: the old process is stopped, killed or triggered
// again in the middle of an upgrade.
func TestOldProcessFaults(t *testing.T) {
	t.Run("sigterm-during-upgrade", testSigtermDuringUpgrade)
	t.Run("sigkill-after-freeze", testSigkillAfterFreeze)
	t.Run("second-trigger-during-upgrade", testSecondTriggerDuringUpgrade)
	t.Run("second-trigger-during-drain", testSecondTriggerDuringDrain)
}

// testSigtermDuringUpgrade: SIGTERM reaches the old process while the new
// one, having received the state, hangs before ready. The stop abandons
// the upgrade (the new process is killed, the tasks thaw), then drains and
// writes the state file; a restart carries every task on exactly.
func testSigtermDuringUpgrade(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-upgrade-timeout", "30s", "-state-file", filepath.Join(dir, "demo.state")}
	s := startServiceIn(t, dir, demoFault, []string{upgradertest.Fault(upgradertest.FaultNewHang, 1, 1)}, args...)
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	cfg := standardLoad(s.URL)
	cfg.Latencies = true
	var stopped time.Time
	var child int
	r := underLoad(t, cfg, func() {
		mark := hup(t, s, old)
		child = waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "state restored"}).Pid
		stopped = time.Now()
		if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := upgradertest.WaitExit(child, 5*time.Second); err != nil {
			t.Fatalf("the new process outlived the stop: %v", err)
		}
		for _, msg := range []string{"stopping during an upgrade: abandoning it", "participants thawed: carrying on", "state file written"} {
			waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: msg, Pid: old})
		}
		assertRefused(t, s.Addr)
	})
	// What the clients see of a stop: refused connections, and a reset
	// for those queued on the socket when it closed.
	t.Logf("clients saw %d failed requests (%v) of %d after the stop", r.Failed(), r.Failures, r.Requests)
	// A request sent in the last moment before the stop may still be
	// queued on the socket when it closes (the reset above); one sent
	// well before it was accepted, and the drain answers those.
	if n := failedBefore(r, stopped.Add(-100*time.Millisecond)); n > 0 {
		t.Errorf("%d requests sent more than 100 ms before the stop failed", n)
	}
	assertFailureKinds(t, r, upgradertest.Refused, upgradertest.Reset)
	assertOnlyAlive(t, s)

	q := startServiceIn(t, dir, demoFault, nil, args...)
	waitLine(t, q, 0, 5*time.Second, upgradertest.Match{Msg: "state restored from file"})
	if got, want := q.Root(t).Hits, uint64(r.Gets+s.Gets.Load())+1; got != want {
		t.Errorf("hits after the restart %d, want the %d answered before the stop and this one", got, want-1)
	}
	waitTaskRuns(t, q, 2)
	restarted := q.Pid(t)
	stopAndWait(t, q.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, restarted)
	assertOnlyAlive(t, q)
}

// testSigkillAfterFreeze: the old process is killed (SIGKILL) once it has
// sent the snapshot and before the new one is ready (old-kill). The new
// process holds the whole snapshot (a sealed memfd) and carries on as the
// only owner: every task's sequence goes on without a gap or a repeat.
func testSigkillAfterFreeze(t *testing.T) {
	s := startService(t, demoFault, []string{upgradertest.Fault(upgradertest.FaultOldKill, 0, 1)})
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	cfg := standardLoad(s.URL)
	cfg.Latencies = true
	var triggered time.Time
	var newPid int
	r := underLoad(t, cfg, func() {
		triggered = time.Now()
		mark := hup(t, s, old)
		// The kill races the new process's "restored": it learns that the
		// old one died either while confirming the handover or, if its
		// confirmation got in first, when the final counts never come.
		// Either way it carries on with the state it received.
		newPid = waitLine(t, s, mark, 10*time.Second,
			upgradertest.Match{Msg: "previous generation died before the handover completed: this process carries on with the state it received"},
			upgradertest.Match{Msg: "handoff: previous generation gone without final counts"}).Pid
		if err := upgradertest.WaitExit(old, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "serving", Pid: newPid})
		if got := s.Root(t); got.Pid != newPid || got.Generation != 1 {
			t.Fatalf("after the kill %+v serves, want pid %d at generation 1", got, newPid)
		}
		if s.Pid(t) != newPid {
			t.Errorf("the pid file names %d, want %d", s.Pid(t), newPid)
		}
		waitTaskRuns(t, s, 2)
	})
	// What the clients see: requests the old process had read when it
	// was killed fail (reset or EOF); the listening socket, shared with
	// the new process, never stops accepting.
	t.Logf("clients saw %d failed requests (%v) of %d when the old process was killed", r.Failed(), r.Failures, r.Requests)
	if n := failedBefore(r, triggered); n > 0 {
		t.Errorf("%d requests sent before the kill failed", n)
	}
	assertFailureKinds(t, r, upgradertest.Reset, upgradertest.EOF)
	// What the old process counted after the capture died with it.
	hits := s.Root(t).Hits
	answered := uint64(r.Gets + s.Gets.Load())
	t.Logf("hits %d, GET / answered %d (%d failed)", hits, answered, r.Failed())
	// A GET the old process counted before the capture but could not
	// answer before the kill is in hits and among the failures.
	if hits > answered+uint64(r.Failed()) {
		t.Errorf("hits %d > GET / answered %d + failed %d", hits, answered, r.Failed())
	}

	// The orphaned generation upgrades as usual.
	var last int
	r2 := underLoad(t, standardLoad(s.URL), func() {
		last = upgradeOK(t, s)
		waitTaskRuns(t, s, 2)
	})
	assertNoFailures(t, r2)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, newPid, last)
	assertOnlyAlive(t, s)
}

// batonJSON runs the baton command with --json and returns its exit status
// and last reply.
func batonJSON(t *testing.T, args ...string) (int, upgrader.ControlReply) {
	t.Helper()
	out, errOut, code := baton(t, nil, append(args, "--json")...)
	var last upgrader.ControlReply
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &last); err != nil {
			t.Fatalf("baton %v: %q: %v (stderr %q)", args, line, err, errOut)
		}
	}
	return code, last
}

// testSecondTriggerDuringUpgrade: while an upgrade runs (its new process
// hangs after receiving the state), a second SIGHUP and "baton upgrade"
// are refused as busy and change nothing; the first upgrade then times out,
// and the next one succeeds.
func testSecondTriggerDuringUpgrade(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	s := startServiceIn(t, dir, demoFault, []string{upgradertest.Fault(upgradertest.FaultNewHang, 1, 1)}, "-upgrade-timeout", "2s", "-control", sock)
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	var newPid int
	r := underLoad(t, standardLoad(s.URL), func() {
		first := hup(t, s, old)
		waitLine(t, s, first, 10*time.Second, upgradertest.Match{Msg: "state restored"})
		second := hup(t, s, old)
		line := waitLine(t, s, second, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
		if !strings.Contains(line.Fields["err"], "upgrade already in progress") {
			t.Errorf("second SIGHUP: %q, want ErrUpgradeInProgress", line.Fields["err"])
		}
		code, reply := batonJSON(t, "upgrade", "--socket", sock)
		if code != 1 || reply.Type != "error" || reply.Code != "busy" || !strings.Contains(reply.Error, "upgrade already in progress") {
			t.Errorf("baton upgrade during an upgrade: exit %d, %+v; want exit 1, busy", code, reply)
		}
		// The first upgrade ends on its own timeout, not because of
		// the second trigger.
		line = waitLine(t, s, s.Logs.Len(), 10*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
		if !strings.Contains(line.Fields["err"], "not ready in time") {
			t.Errorf("first upgrade: %q, want the timeout", line.Fields["err"])
		}
		if got := s.Root(t); got.Pid != old {
			t.Fatalf("pid %d serves, want %d", got.Pid, old)
		}
		newPid = upgradeOK(t, s)
		waitTaskRuns(t, s, 2)
	})
	assertNoFailures(t, r)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, newPid)
	assertOnlyAlive(t, s)
}

// testSecondTriggerDuringDrain: while the old process drains a request
// whose body is still arriving, a SIGHUP to the new process and "baton
// upgrade" are refused (the previous generation is still draining), and a
// SIGHUP to the draining old process is ignored; the request is answered
// by the old process, which then exits, and the next upgrade succeeds.
func testSecondTriggerDuringDrain(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	s := startServiceIn(t, dir, demoFault, nil, "-control", sock, "-drain", "20s")
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	// A request to the old process whose body has not all arrived: it
	// keeps the drain going until the test sends the rest.
	slow, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	var newPid, last int
	r := underLoad(t, standardLoad(s.URL), func() {
		u := s.Upgrade(t)
		if u.Err != "" {
			t.Fatal(u.Err)
		}
		newPid = u.NewPid
		waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "draining", Pid: old})

		mark := hup(t, s, newPid)
		line := waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: newPid})
		if !strings.Contains(line.Fields["err"], "previous generation is still draining") {
			t.Errorf("SIGHUP to the new process: %q, want ErrParentRunning", line.Fields["err"])
		}
		code, reply := batonJSON(t, "upgrade", "--socket", sock)
		if code != 1 || reply.Code != "busy" || !strings.Contains(reply.Error, "previous generation is still draining") {
			t.Errorf("baton upgrade during the drain: exit %d, %+v; want exit 1, busy", code, reply)
		}
		// The old process no longer reads its signals once it drains
		// (baton-demo stops its signal loop at the handover).
		hup(t, s, old)
		if !upgradertest.Alive(old) {
			t.Fatal("the draining process died of SIGHUP")
		}

		if _, err := io.WriteString(slow, "world"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
		if err != nil {
			t.Fatalf("the request held across the drain: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "helloworld" || resp.Header.Get("X-Pid") != strconv.Itoa(old) {
			t.Errorf("held request: %q from pid %s; want helloworld from %d", body, resp.Header.Get("X-Pid"), old)
		}
		if err := upgradertest.WaitExit(old, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, l := range s.Logs.Lines(mark) {
			if l.Pid == old && l.Msg == "upgrade started" {
				t.Errorf("the draining process started an upgrade: %s", l.Raw)
			}
		}
		last = upgradeOK(t, s)
		waitTaskRuns(t, s, 2)
	})
	assertNoFailures(t, r)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, newPid, last)
	assertOnlyAlive(t, s)
}

// TestNewProcessCrashesAfterReadyUnderSystemd is new-crash-late under a
// real systemd 252 (tests/sdns), with a unit like the shipped one:
// Type=notify, NotifyAccess=main, Restart=on-failure. At the handover the
// old process makes the new one the main process (MAINPID=, BARRIER=1), so
// the new one's crash is the main process failing: the reload fails, and
// systemd restarts the service, which starts fresh, without the state it
// had handed over (there is no state file here). The ExecStop= of the unit
// (as shipped) then runs with $MAINPID unset and fails, which only adds
// "Failed with result 'exit-code'" to the journal.
func TestNewProcessCrashesAfterReadyUnderSystemd(t *testing.T) {
	e := bootSystemd(t)
	fault := e.in.Install(t, demoFault, "baton-demo-fault")
	upgradertest.Install(t, fault, e.bin)
	const unit, port = "crash.service", 8110
	e.in.InstallUnit(t, unit, e.unit(unit, fmt.Sprintf("127.0.0.1:%d", port),
		"Environment="+upgradertest.Fault(upgradertest.FaultNewCrashLate, 1, 1)+"\nRestart=on-failure\nRestartSec=100ms"))
	e.in.Start(t, unit)
	defer e.in.Output("systemctl", "stop", unit)
	first := e.state(t, unit)
	if !first.running() || first.NRestarts != "0" {
		t.Fatalf("after start: %+v", first)
	}

	// The reload runs "baton upgrade --wait", which sees the upgrade
	// succeed; whether it also sees the old process drain depends on how
	// fast systemd acts on the crash.
	out, err := e.in.Output("systemctl", "reload", unit)
	t.Logf("systemctl reload: %v %s", err, out)
	var after unitState
	sdns.Poll(t, 20*time.Second, "systemd to restart the service", func() bool {
		after = e.state(t, unit)
		return after.NRestarts == "1" && after.running() && after.MainPID != first.MainPID
	})
	journal := e.in.UnitJournal(t, unit)
	var sd []string
	for _, l := range strings.Split(journal, "\n") {
		if strings.Contains(l, "systemd[1]:") {
			sd = append(sd, l)
		}
	}
	t.Logf("after the crash: %+v; systemd said:\n%s", after, strings.Join(sd, "\n"))
	for _, want := range []string{"baton fault injected: new-crash-late@1.1", "Main process exited, code=exited, status=7",
		"Scheduled restart job, restart counter is at 1"} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal does not say %q:\n%s", want, journal)
		}
	}
	if got := e.root(t, port); got.Generation != 0 || got.Pid != after.MainPID {
		t.Errorf("after the restart GET / = %+v, want generation 0 from pid %d", got, after.MainPID)
	}
	if alive := e.in.Sh(t, fmt.Sprintf("kill -0 %d 2>/dev/null && echo alive || echo gone", first.MainPID)); strings.TrimSpace(alive) != "gone" {
		t.Errorf("the first process (%d) is %s", first.MainPID, alive)
	}
}
