package tests

// The reliability suite (issue 7): every way an upgrade can go wrong that
// baton claims to survive, each under HTTP load with background tasks
// running, and what a user sees where it cannot be survived. Each case
// checks the same things: what the clients saw (upgradertest.LoadReport), every task's
// run sequence in the task log, which process serves, that no process of the
// service outlives its role, and that the old process's fds and goroutines
// are back where they were. RELIABILITY.md lists every case and its result.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/tests/sdns"
	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
	"golang.org/x/sys/unix"
)

// The background work every case runs: 2000 tasks every 100 ms, each run
// logged with its sequence number and the pid that ran it.
const (
	relTasks        = 2000
	relTaskInterval = 100 * time.Millisecond
)

// service is a baton-demo under test, with its task log.
type service struct {
	*demotest.Proc
	taskLog string
	// exe is the path every generation re-executes (its argv[0]): Bin,
	// unless the service was started through a wrapper.
	exe string
}

// startService starts bin in a new directory with the tasks and their log.
func startService(t *testing.T, bin string, env []string, args ...string) *service {
	t.Helper()
	return startServiceIn(t, t.TempDir(), bin, env, args...)
}

func startServiceIn(t *testing.T, dir, bin string, env []string, args ...string) *service {
	t.Helper()
	taskLog := filepath.Join(dir, "tasks.log")
	args = append([]string{"-tasks", strconv.Itoa(relTasks), "-task-interval", relTaskInterval.String(),
		"-task-log", taskLog}, args...)
	p := demotest.StartEnv(t, env, bin, dir, args...)
	return &service{Proc: p, taskLog: taskLog, exe: p.Bin}
}

// taskCheck is what the task log says about every task's runs, in file
// order (each generation flushes its records when its tasks freeze, before
// the next one runs any).
type taskCheck struct {
	tasks, runs int
	// byPid counts runs per process.
	byPid map[int]int
	// gaps counts runs whose seq skips numbers (runs lost); repeats, runs
	// whose seq was already logged (runs executed twice).
	gaps, repeats int
	example       string // the first gap or repeat, for the error message
}

// checkTaskLog reads the task log and checks each task's sequence numbers.
func checkTaskLog(t *testing.T, path string) taskCheck {
	t.Helper()
	c := taskCheck{byPid: map[int]int{}}
	last := map[string]uint64{}
	scanTaskLog(t, path, func(r taskRun) {
		prev, seen := last[r.id]
		if !seen {
			c.tasks++
		}
		c.runs++
		c.byPid[r.pid]++
		switch {
		case r.seq == prev+1:
		case r.seq <= prev:
			c.repeats++
		default:
			c.gaps++
		}
		if r.seq != prev+1 && c.example == "" {
			c.example = fmt.Sprintf("task %s: seq %d (pid %d) after seq %d", r.id, r.seq, r.pid, prev)
		}
		last[r.id] = max(prev, r.seq)
	})
	return c
}

func (c taskCheck) String() string {
	return fmt.Sprintf("%d tasks, %d runs in %d processes, %d gaps, %d repeats", c.tasks, c.runs, len(c.byPid), c.gaps, c.repeats)
}

// assertTasksExact checks that each of the tasks ran with consecutive
// sequence numbers, none lost and none repeated, in each of the processes
// pids.
func assertTasksExact(t *testing.T, tasks int, c taskCheck, pids ...int) {
	t.Helper()
	t.Logf("task log: %s", c)
	if c.tasks != tasks {
		t.Errorf("the log has runs of %d tasks, want %d", c.tasks, tasks)
	}
	if c.gaps != 0 || c.repeats != 0 {
		t.Errorf("task runs lost or repeated: %s; first: %s", c, c.example)
	}
	for _, pid := range pids {
		if c.byPid[pid] == 0 {
			t.Errorf("no task ran in pid %d; runs by pid: %v", pid, c.byPid)
		}
	}
}

// assertOnlyAlive checks that of every process the service ran, exactly
// keep are alive: the others exit within a few seconds. The processes are
// those that logged a line and those running the service's binary.
func assertOnlyAlive(t *testing.T, s *service, keep ...int) {
	t.Helper()
	for _, pid := range keep {
		if !upgradertest.Alive(pid) {
			t.Errorf("pid %d should be running", pid)
		}
	}
	for _, pid := range s.Logs.Pids() {
		if slices.Contains(keep, pid) {
			continue
		}
		if err := upgradertest.WaitExit(pid, 10*time.Second); err != nil {
			t.Errorf("a process of the service outlived its role: %v", err)
		}
	}
	for _, pid := range procsRunning(s.exe) {
		if !slices.Contains(keep, pid) && upgradertest.Alive(pid) {
			t.Errorf("pid %d runs %s but is not one of %v", pid, s.exe, keep)
		}
	}
}

// procsRunning lists the processes whose argv[0] is exe.
func procsRunning(exe string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if arg0, _, _ := bytes.Cut(b, []byte{0}); string(arg0) == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}

// usage is what a process holds that an upgrade could leak.
type usage struct {
	fds        int   // sockets, pipes, memfds and pidfds (fdCount)
	goroutines int   // go_goroutines
	rssKiB     int64 // VmRSS
}

func (u usage) String() string {
	return fmt.Sprintf("fds=%d goroutines=%d rss=%dKiB", u.fds, u.goroutines, u.rssKiB)
}

// usageOf measures pid, which must be one of the service's processes
// serving on its address. The fds are the fewest seen over 300 ms: the
// connections of the test's own probes close a moment after their reply.
func usageOf(t *testing.T, s *service, pid int) usage {
	t.Helper()
	fds := fdCount(t, pid)
	for i := 0; i < 10; i++ {
		time.Sleep(30 * time.Millisecond)
		fds = min(fds, fdCount(t, pid))
	}
	return usage{fds: fds, goroutines: goroutinesOf(t, s, pid), rssKiB: rssOf(t, pid)}
}

// goroutinesOf reads go_goroutines from pid's /metrics. Both generations
// may accept on the shared socket, so it asks until pid answers.
func goroutinesOf(t *testing.T, s *service, pid int) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := 0; i < 50; i++ {
		resp, err := c.Get(s.URL + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		if resp.Header.Get("X-Pid") != strconv.Itoa(pid) {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("go_goroutines %q", v)
				}
				return n
			}
		}
		t.Fatalf("pid %d's /metrics has no go_goroutines", pid)
	}
	t.Fatalf("pid %d did not answer GET /metrics in 50 tries", pid)
	return 0
}

func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q", v)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// assertUsageSettles checks that pid's fds come back to exactly what they
// were and its goroutines to at most two more (the scrape's own connection
// may still be closing). Closed connections and a dead child's pipes are
// released a moment after the load stops, so it waits up to 5 s.
func assertUsageSettles(t *testing.T, s *service, pid int, before usage) {
	t.Helper()
	var now usage
	for deadline := time.Now().Add(5 * time.Second); ; {
		now = usage{fds: fdCount(t, pid), goroutines: goroutinesOf(t, s, pid)}
		if now.fds == before.fds && now.goroutines <= before.goroutines+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("old process before: %s; after: fds=%d goroutines=%d", before, now.fds, now.goroutines)
	if now.fds != before.fds {
		t.Errorf("old process had %d fds before and %d after: %v", before.fds, now.fds, fdLinks(pid))
	}
	if now.goroutines > before.goroutines+2 {
		t.Errorf("old process had %d goroutines before and %d after", before.goroutines, now.goroutines)
	}
}

// waitTaskRuns waits until every task has run at least more times than it
// had: the cases let the tasks work before and after each event, so that
// each process's share of every task's sequence is in the log.
func waitTaskRuns(t *testing.T, s *service, more uint64) {
	t.Helper()
	want := getTasks(t, s.Proc, "?limit=1").MinRuns + more
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := getTasks(t, s.Proc, "?limit=1").MinRuns
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks stalled: every task has run at least %d times, want %d", got, want)
		}
	}
}

// upgradeOK upgrades under the load, waits for the old process to exit and
// returns the new pid.
func upgradeOK(t *testing.T, s *service) int {
	t.Helper()
	u := s.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade failed: %s", u.Err)
	}
	if err := upgradertest.WaitExit(u.OldPid, 15*time.Second); err != nil {
		t.Fatalf("old process: %v", err)
	}
	return u.NewPid
}

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
		name    string
		fault   upgradertest.FaultStep // made to fail in attempt 1 of generation 1
		args    []string
		install func(t *testing.T, path string) // replaces the binary for the failing attempt
		wantErr string
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.fault != "" {
				env = []string{upgradertest.Fault(tt.fault, 1, 1)}
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
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r1)
			assertOnlyAlive(t, s, old)
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

// waitLine waits for a log line of the service matching one of ms, from
// log index from on.
func waitLine(t *testing.T, s *service, from int, timeout time.Duration, ms ...upgradertest.Match) upgradertest.Line {
	t.Helper()
	line, err := s.Logs.WaitFrom(from, timeout, ms...)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs)
	}
	return line
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
		newPid = waitLine(t, s, mark, 10*time.Second, upgradertest.Match{
			Msg: "previous generation died before the handover completed: this process carries on with the state it received"}).Pid
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
	t.Logf("hits %d, GET / answered %d: %d counted by the old process after the capture were lost with it", hits, answered, answered-hits)
	if hits > answered {
		t.Errorf("hits %d > GET / answered %d", hits, answered)
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

// TestFdLimit: the service runs with RLIMIT_NOFILE set, soft and hard,
// just above what it uses under the load (prlimit(1) from util-linux wraps
// the first start; every generation inherits the limit). The upgrade needs
// a few more fds in the old process (the pipes and pidfd of the new
// process, a socket pair, a memfd) and the new process needs its own: with
// too few, it must fail with a clear error, leaving the old process serving
// with everything; with enough, it must succeed.
func TestFdLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	for _, limit := range []int{20, 24, 28, 64} {
		t.Run(fmt.Sprintf("nofile=%d", limit), func(t *testing.T) {
			dir := t.TempDir()
			real := filepath.Join(dir, "bin", "baton-demo")
			if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
				t.Fatal(err)
			}
			upgradertest.Install(t, demoFault, real)
			wrapper := filepath.Join(dir, "wrapper")
			script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s \"$@\"\n", prlimit, limit, limit, real)
			upgradertest.InstallBytes(t, []byte(script), wrapper, 0o755)
			s := startServiceIn(t, dir, wrapper, nil)
			s.exe = real
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			// The clients' connections count against the limit too:
			// 8 clients, half on fresh connections.
			cfg := upgradertest.LoadConfig{URL: s.URL, Clients: 8, Fresh: 0.5, Post: 0.5, Rate: 2000}
			var u demotest.Upgrade
			r := underLoad(t, cfg, func() {
				waitTaskRuns(t, s, 2)
				u = s.Upgrade(t)
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			t.Logf("RLIMIT_NOFILE %d, old process at rest: %s; upgrade: %+v", limit, before, u)
			if u.Err == "" {
				if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
					t.Fatal(err)
				}
				stopAndWait(t, s.Proc)
				assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, u.NewPid)
				assertOnlyAlive(t, s)
				return
			}
			if limit >= 64 {
				t.Errorf("upgrade failed with %d fds allowed: %s", limit, u.Err)
			}
			if got := s.Root(t); got.Pid != old {
				t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
			}
			if !strings.Contains(u.Err+childErrors(s, old), "too many open files") {
				t.Errorf("the failure does not say the fds ran out: %s", u.Err)
			}
			assertOnlyAlive(t, s, old)
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			assertOnlyAlive(t, s)
		})
	}
}

// waitRaw waits for a line of the service's output that is not a log line
// and contains substr: the error a process exits with.
func waitRaw(t *testing.T, s *service, substr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(childErrors(s, 0), substr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no process wrote %q:\n%s", substr, s.Logs)
		}
	}
}

// childErrors returns what the service's processes wrote that is not a log
// line (a process's last words on stderr), leaving out the lines that name
// pid, if not zero.
func childErrors(s *service, pid int) string {
	var b strings.Builder
	for _, l := range s.Logs.Lines(0) {
		if l.Msg == "" && (pid == 0 || l.Pid != pid) {
			b.WriteString(l.Raw + "\n")
		}
	}
	return b.String()
}

// TestSnapshotTooLarge: the snapshot (about 170 KB with 2000 tasks) is
// larger than state.Options.MaxSize (baton-demo -state-max-bytes). When the
// old process's limit is exceeded it cannot capture the snapshot; when only
// the new process's is, it refuses what arrives. Either way the upgrade
// fails saying so, and the old process thaws and keeps everything.
func TestSnapshotTooLarge(t *testing.T) {
	tests := []struct {
		name    string
		args    []string // for every generation
		newArgs string   // for the new process only
		wantErr string
	}{
		{name: "old-limit", args: []string{"-state-max-bytes", "65536"},
			wantErr: "this process could not send its state: send snapshot: write section"},
		{name: "new-limit", newArgs: "-state-max-bytes 65536",
			wantErr: "new process rejected the state: receive snapshot: state: snapshot too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, demoFault, nil, tt.args...)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			real := filepath.Join(s.Dir, "baton-demo-real")
			r := underLoad(t, standardLoad(s.URL), func() {
				waitTaskRuns(t, s, 2)
				if tt.newArgs != "" {
					// The new process runs the same binary with
					// a smaller limit.
					upgradertest.Install(t, demoFault, real)
					script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" %s\n", real, tt.newArgs)
					upgradertest.InstallBytes(t, []byte(script), s.Bin, 0o755)
				}
				u := s.Upgrade(t)
				t.Logf("upgrade error: %s", u.Err)
				if !strings.Contains(u.Err, tt.wantErr) || !strings.Contains(u.Err, "65536") {
					t.Errorf("upgrade error %q, want one containing %q and the limit", u.Err, tt.wantErr)
				}
				waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "participants thawed: carrying on", Pid: old})
				if got := s.Root(t); got.Pid != old {
					t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
				}
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			s.exe = real
			assertOnlyAlive(t, s)
		})
	}
}

// mountTmpfs mounts a tmpfs with the given options on a new directory and
// unmounts it when the test ends (after the service, registered later, has
// stopped). It needs root.
func mountTmpfs(t *testing.T, flags uintptr, opts string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): run as root outside a restricted container", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1<<14; i++ {
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			return path
		} else if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("%s never filled up", dir)
	return ""
}

// TestStateFileDiskFull: the state file lives on a 1 MiB tmpfs that fills
// up while the service runs, upgrades and stops. Writing the file fails
// with a clear error and leaves no temporary file behind; the handoff,
// which needs no disk, is not affected; the last file written stays whole,
// and a restart from it carries every task on without a gap (repeating the
// runs made since that file).
func TestStateFileDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 0, "size=1m,mode=0755")
	dir := t.TempDir()
	stateFile := filepath.Join(mnt, "demo.state")
	args := []string{"-state-file", stateFile, "-state-file-interval", "200ms"}
	s := startServiceIn(t, dir, demoFault, nil, args...)
	old := s.Pid(t)
	waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "state file written", Pid: old})
	filler := fillDisk(t, mnt)
	mark := s.Logs.Len()

	noTemp := func() {
		t.Helper()
		if tmp, _ := filepath.Glob(filepath.Join(mnt, ".demo.state.tmp-*")); len(tmp) > 0 {
			t.Errorf("temporary files left behind: %v", tmp)
		}
	}
	var newPid int
	r := underLoad(t, standardLoad(s.URL), func() {
		line := waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "periodic state file write failed", Pid: old})
		if !strings.Contains(line.Fields["err"], "no space left on device") {
			t.Errorf("write failure: %q, want ENOSPC", line.Fields["err"])
		}
		noTemp()
		newPid = upgradeOK(t, s)
		line = waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "periodic state file write failed", Pid: newPid})
		if !strings.Contains(line.Fields["err"], "no space left on device") {
			t.Errorf("write failure in the new process: %q", line.Fields["err"])
		}
		waitTaskRuns(t, s, 2)
	})
	assertNoFailures(t, r)

	// The stop cannot write the file either: it says so and exits 1.
	stopAndWait(t, s.Proc)
	line := waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "state file not written", Pid: newPid})
	if !strings.Contains(line.Fields["err"], "no space left on device") {
		t.Errorf("stop: %q, want ENOSPC", line.Fields["err"])
	}
	waitRaw(t, s, "baton-demo: write state file")
	noTemp()
	assertOnlyAlive(t, s)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	q := startServiceIn(t, dir, demoFault, nil, args...)
	waitLine(t, q, 0, 5*time.Second, upgradertest.Match{Msg: "state restored from file"})
	waitTaskRuns(t, q, 2)
	stopAndWait(t, q.Proc)
	c := checkTaskLog(t, s.taskLog)
	t.Logf("task log: %s; the restart repeated %.1f runs per task, made after the disk filled", c, float64(c.repeats)/relTasks)
	if c.gaps != 0 {
		t.Errorf("task runs lost: %s; first: %s", c, c.example)
	}
	if c.repeats == 0 {
		t.Errorf("no run repeated: the restart did not start from the file written before the disk filled")
	}
	assertOnlyAlive(t, q)
}

// TestTmpdirNotWritable: TMPDIR names a read-only directory. The handoff
// needs no temporary file (the snapshot travels in a memfd), so upgrades
// work as usual.
func TestTmpdirNotWritable(t *testing.T) {
	ro := filepath.Join(t.TempDir(), "ro")
	if os.Getuid() == 0 {
		// Root writes through any mode: a read-only mount stops it.
		ro = mountTmpfs(t, unix.MS_RDONLY, "size=64k")
	} else if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o644); err == nil {
		t.Fatalf("%s is writable", ro)
	}
	s := startService(t, demoFault, []string{"TMPDIR=" + ro})
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	var pids []int
	r := underLoad(t, standardLoad(s.URL), func() {
		for i := 0; i < 3; i++ {
			pids = append(pids, upgradeOK(t, s))
			waitTaskRuns(t, s, 2)
		}
	})
	assertNoFailures(t, r)
	assertStateIntact(t, s.Proc, r, 3)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), append([]int{old}, pids...)...)
	assertOnlyAlive(t, s)
}

// TestBadHandoffEnv: the new process is started through a wrapper that
// replaces BATON_HANDOFF with something it cannot use. It cannot receive the
// state, so it must not become ready: the upgrade fails and the old process
// keeps serving with all its state.
func TestBadHandoffEnv(t *testing.T) {
	tests := []struct {
		name, value, wantLog string
	}{
		{"garbage", "garbage", "bad field"},
		{"other-version", "v=2;ppid=$PPID;gen=1;attempt=1", "version 2"},
		{"other-parent", "v=1;ppid=1;gen=1;attempt=1", "meant for a child of pid 1"},
		{"unknown-fd-name", "v=1;ppid=$PPID;gen=9;attempt=1", "baton.handoff.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, demoFault, nil)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			real := filepath.Join(s.Dir, "baton-demo-real")
			upgradertest.Install(t, demoFault, real)
			script := fmt.Sprintf("#!/bin/sh\nBATON_HANDOFF=\"%s\" exec %s \"$@\"\n", tt.value, real)
			r := underLoad(t, standardLoad(s.URL), func() {
				upgradertest.InstallBytes(t, []byte(script), s.Bin, 0o755)
				u := s.Upgrade(t)
				t.Logf("upgrade: %+v", u)
				if u.Err == "" {
					t.Fatalf("a new process that could not receive the state became ready (pid %d)", u.NewPid)
				}
				if got := s.Root(t); got.Pid != old {
					t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
				}
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			t.Logf("the new process said: %s", strings.TrimSpace(childErrors(s, old)))
			if !strings.Contains(childErrors(s, old), tt.wantLog) {
				t.Errorf("the new process did not say %q:\n%s", tt.wantLog, s.Logs)
			}
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			s.exe = real
			assertOnlyAlive(t, s)
		})
	}
}

// serveOrExit starts cmd with its output read by the kit's log reader and
// waits, up to 10 s, until it either exits or logs that it serves, in
// which case it stops it with SIGTERM. It returns all it wrote, whether it
// served and how it exited.
func serveOrExit(t *testing.T, cmd *exec.Cmd) (out string, served bool, err error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	logs := upgradertest.ReadLogs(r)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serving := make(chan error, 1)
	go func() {
		_, err := logs.WaitContext(ctx, 0, upgradertest.Match{Msg: "serving"})
		serving <- err
	}()
	select {
	case err = <-exited:
	case werr := <-serving:
		switch {
		case werr == nil:
			served = true
			cmd.Process.Signal(syscall.SIGTERM)
			err = <-exited
		case errors.Is(werr, context.DeadlineExceeded):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("neither served nor exited in 10 s:\n%s", logs)
		default: // the output ended: it exited
			err = <-exited
		}
	}
	cancel()
	select {
	case <-logs.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("output still open 5 s after the exit")
	}
	var all strings.Builder
	for _, l := range logs.Lines(0) {
		all.WriteString(l.Raw + "\n")
	}
	return all.String(), served, err
}

// TestBadActivationEnv: baton-demo started with malformed socket-activation
// variables bound to it (LISTEN_PID is its own pid). It must refuse to start
// with an error naming the variable, or, where the variables are well
// formed but name descriptors that are not listening sockets, close them,
// say so and serve; never panic. The parsing itself is tested in the
// systemd package (activation_test.go); this checks what the service does
// with it.
func TestBadActivationEnv(t *testing.T) {
	tests := []struct {
		name   string
		script string // sets the variables, then execs the demo
		serves bool
		either bool // serving or refusing are both acceptable
		socket bool // pass a listening TCP socket as fd 3
		want   string
	}{
		{name: "fds-garbage", script: "export LISTEN_PID=$$ LISTEN_FDS=garbage", want: `LISTEN_FDS="garbage"`},
		{name: "fds-negative", script: "export LISTEN_PID=$$ LISTEN_FDS=-1", want: `LISTEN_FDS="-1"`},
		{name: "fds-huge", script: "export LISTEN_PID=$$ LISTEN_FDS=99999999999", want: "LISTEN_FDS=99999999999"},
		// fds 3 and 4 are not passed, but the Go runtime (1.25 and
		// later) opens its cgroup CPU limit files there: the check that
		// they are open passes, and the integration closes them as
		// "not a listening socket". See RELIABILITY.md.
		{name: "fds-claimed-not-passed", script: "exec 3>&- 4>&-; export LISTEN_PID=$$ LISTEN_FDS=2", either: true, want: "LISTEN_FDS"},
		{name: "names-mismatch", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b; exec 3</dev/null", want: "LISTEN_FDNAMES"},
		{name: "pid-garbage", script: "export LISTEN_PID=garbage LISTEN_FDS=1", want: `LISTEN_PID="garbage"`},
		{name: "fd-not-a-socket", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec 3</dev/null", serves: true,
			want: "systemd: closed an activated descriptor"},
		{name: "other-process", script: "export LISTEN_PID=1 LISTEN_FDS=1", serves: true, want: "msg=serving"},
		// A real listening socket under a name no Listen call asks for
		// (the demo listens on -addr 127.0.0.1:0): closed at Ready.
		{name: "unknown-fd-name", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=bogus", socket: true, serves: true,
			want: "closed a socket-activated listener no Listen call asked for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "baton-demo")
			upgradertest.Install(t, demoV1, bin)
			cmd := exec.Command("/bin/sh", "-c", tt.script+"; exec "+bin+" -addr 127.0.0.1:0")
			if tt.socket {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				f, err := ln.(*net.TCPListener).File()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = []*os.File{f}
			}
			out, served, err := serveOrExit(t, cmd)
			t.Logf("served %v, exit %v: %s", served, err, strings.TrimSpace(out[max(0, strings.LastIndex(out, "baton-demo:")):]))
			if served != tt.serves && !tt.either {
				t.Errorf("served = %v, want %v:\n%s", served, tt.serves, out)
			}
			if !served && err == nil {
				t.Errorf("refused to serve but exited 0")
			}
			if served && tt.either {
				tt.want = "systemd: closed an activated descriptor"
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output does not say %q:\n%s", tt.want, out)
			}
			if strings.Contains(out, "panic") {
				t.Errorf("panicked:\n%s", out)
			}
		})
	}
}

// TestControlSocketBadInput: malformed requests on the control socket get
// an error reply with the right code, change nothing and leave nothing
// behind; the parsing itself is fuzzed in the upgrader package
// (FuzzParseControlRequest).
func TestControlSocketBadInput(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	s := startServiceIn(t, dir, demoV1, nil, "-control", sock)
	pid := s.Pid(t)
	before := usageOf(t, s, pid)
	tests := []struct {
		name      string
		request   string
		halfClose bool // end the request without a newline
		wantType  string
		wantCode  string
		wantErr   string
	}{
		{name: "not JSON", request: "not json\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "binary", request: "\x00\xff\xfe\x01\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "trailing garbage", request: `{"v":1,"cmd":"status"} x` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "other version", request: `{"v":2,"cmd":"status"}` + "\n", wantType: "error", wantCode: "version", wantErr: "protocol version 2"},
		{name: "no version", request: `{"cmd":"status"}` + "\n", wantType: "error", wantCode: "version", wantErr: "protocol version 0"},
		{name: "unknown command", request: `{"v":1,"cmd":"frobnicate"}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: `unknown command "frobnicate"`},
		{name: "negative timeout", request: `{"v":1,"cmd":"upgrade","timeout_ms":-1}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "out of range"},
		{name: "timeout overflows", request: `{"v":1,"cmd":"upgrade","timeout_ms":9223372036854775807}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "out of range"},
		{name: "longer than 64 KiB", request: strings.Repeat("x", 70000) + "\n", wantType: "error", wantCode: "bad_request", wantErr: "longer than 65536"},
		{name: "no newline", request: `{"v":1,"cmd":"status"}`, halfClose: true, wantType: "error", wantCode: "bad_request", wantErr: "EOF"},
		{name: "empty", request: "", halfClose: true, wantType: "error", wantCode: "bad_request", wantErr: "EOF"},
		// The limit is 64 KiB, not the reader's 4 KiB buffer.
		{name: "8 KiB request", request: `{"v":1,"cmd":"status","pad":"` + strings.Repeat("x", 8192) + `"}` + "\n", wantType: "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				c.(*net.UnixConn).CloseWrite()
			}
			b, err := io.ReadAll(c)
			// The service closes a request it will not read to its
			// end with input unread: the reply arrives, then a reset.
			if err != nil && !(errors.Is(err, syscall.ECONNRESET) && bytes.HasSuffix(b, []byte("\n"))) {
				t.Fatalf("%v after %q", err, b)
			}
			var reply upgrader.ControlReply
			if err := json.Unmarshal(b, &reply); err != nil {
				t.Fatalf("reply %q: %v", b, err)
			}
			if reply.Type != tt.wantType || reply.Code != tt.wantCode || !strings.Contains(reply.Error, tt.wantErr) {
				t.Errorf("reply %+v; want type %q, code %q, saying %q", reply, tt.wantType, tt.wantCode, tt.wantErr)
			}
		})
	}
	out, _, code := baton(t, nil, "status", "--socket", sock, "--json")
	var st upgrader.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Pid != pid || st.Generation != 0 || len(st.History) != 0 {
		t.Errorf("status after the bad requests: exit %d, %v, %+v", code, err, st)
	}
	assertUsageSettles(t, s, pid, before)
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
