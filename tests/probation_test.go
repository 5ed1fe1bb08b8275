package tests

// Probation (issue 14): with -probation the old process stands by after the
// new one reports ready, and takes the service back if the new one dies
// before the probation ends. The crashes here come at 20 ms (new-crash-late:
// before the new process's servers open), 300 ms and 2 s (new-crash-serving:
// while it serves the load) after the new process's ready, with a 3 s
// probation, under continuous fresh and kept-alive HTTP load and 2000 tasks.

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// probationCase is one way the new process dies during its probation.
type probationCase struct {
	name string
	env  []string
	// serves: the new process served requests before it died.
	serves bool
	// status is how the new process ends: "exit status 7" if empty.
	status string
}

var probationCrashes = []probationCase{
	{name: "crash-20ms", env: []string{upgradertest.Fault(upgradertest.FaultNewCrashLate, 1, 1)}},
	{name: "crash-300ms", serves: true, env: []string{upgradertest.Fault(upgradertest.FaultNewCrashServing, 1, 1),
		upgradertest.FaultDelay(300 * time.Millisecond)}},
	{name: "crash-2s", serves: true, env: []string{upgradertest.Fault(upgradertest.FaultNewCrashServing, 1, 1),
		upgradertest.FaultDelay(2 * time.Second)}},
	// The first health check (GET /healthz, at a quarter of the
	// probation) fails: the old process kills the new one.
	{name: "unhealthy", serves: true, status: "signal: killed",
		env: []string{upgradertest.Fault(upgradertest.FaultHealthCheckFails, 0, 1)}},
}

// cliResult is what one run of the baton command said.
type cliResult struct {
	stdout, stderr string
	code           int
	err            error
}

// batonAsync runs the baton command in the background: an upgrade with
// --wait lasts the whole probation.
func batonAsync(args ...string) <-chan cliResult {
	done := make(chan cliResult, 1)
	go func() {
		cmd := exec.Command(batonCLI, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := cliResult{stdout: out.String(), stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else {
			r.err = err
		}
		done <- r
	}()
	return done
}

// failedFrom counts the failed requests of r that started at or after at.
func failedFrom(r *upgradertest.LoadReport, at time.Time) int {
	n := 0
	for _, s := range r.Samples {
		if s.Failed && !s.Start.Before(at) {
			n++
		}
	}
	return n
}

// TestProbationRollsBack: the new process reports ready, serves (or not yet),
// and crashes before its 3 s probation ends. The old process accepts again
// at once and serves on: no request on a new connection made after the crash
// fails, the pid file names the old process, `baton upgrade --wait` exits 4
// naming the step and the new process's exit status, `baton status` and the
// metrics say rolled_back, the tasks continue with no gap and no repeat, and
// the next upgrade (no fault) succeeds.
func TestProbationRollsBack(t *testing.T) {
	for _, tc := range probationCrashes {
		t.Run(tc.name, func(t *testing.T) { testProbationRollsBack(t, tc) })
	}
}

func testProbationRollsBack(t *testing.T, tc probationCase) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	s := startServiceIn(t, dir, demoFault, tc.env, "-probation", "3s", "-control", ctl)
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)

	// Two loads at once, so that failures can be told apart: one on a
	// fresh connection per request, one on kept-alive connections.
	fresh := upgradertest.LoadConfig{URL: s.URL, Clients: 16, Fresh: 1, Post: 0.5, Rate: 1000, Latencies: true}
	kept := upgradertest.LoadConfig{URL: s.URL, Clients: 16, Fresh: 0, Post: 0.5, Rate: 1000, Latencies: true}
	var (
		triggered, crashed time.Time
		child              int
		res                cliResult
		keptReport         *upgradertest.LoadReport
	)
	freshReport := underLoad(t, fresh, func() {
		keptReport = underLoad(t, kept, func() {
			waitTaskRuns(t, s, 1)
			mark := s.Logs.Len()
			triggered = time.Now()
			done := batonAsync("upgrade", "--wait", "--json", "--socket", ctl)
			hello := waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "new process said hello", Pid: old})
			child, _ = strconv.Atoi(hello.Fields["child_pid"])
			if err := upgradertest.WaitExit(child, 15*time.Second); err != nil {
				t.Fatalf("the new process did not crash: %v", err)
			}
			crashed = time.Now()
			res = <-done
			waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "upgrade failed", Pid: old})
			// The old process serves the load alone for a while.
			time.Sleep(500 * time.Millisecond)
		})
	})
	t.Logf("trigger at +%v, crash seen at +%v; baton upgrade: exit %d, %s%s",
		triggered.Sub(freshReport.Samples[0].Start).Round(time.Millisecond),
		crashed.Sub(freshReport.Samples[0].Start).Round(time.Millisecond), res.code, res.stdout, res.stderr)
	t.Logf("fresh connections: %v", freshReport)
	t.Logf("kept-alive connections: %v", keptReport)
	t.Logf("failed on fresh connections made before the crash (the new process held them): %d; on kept-alive connections: %d",
		failedBefore(freshReport, crashed), keptReport.Failed())

	if n := failedFrom(freshReport, crashed); n > 0 {
		t.Errorf("%d requests on new connections made after the crash failed: %q", n, freshReport.Errors)
	}
	if n := failedBefore(freshReport, triggered) + failedBefore(keptReport, triggered); n > 0 {
		t.Errorf("%d requests sent before the trigger failed", n)
	}
	if tc.serves && freshReport.Pids[child] == 0 {
		t.Errorf("the new process %d answered no request before it crashed: %v", child, freshReport.Pids)
	}
	assertFailureKinds(t, freshReport, upgradertest.Reset, upgradertest.EOF)
	assertFailureKinds(t, keptReport, upgradertest.Reset, upgradertest.EOF)

	// baton upgrade --wait: exit 4, the step and the new process's exit.
	if res.err != nil || res.code != 4 {
		t.Errorf("baton upgrade --wait: exit %d (%v), want 4 (rolled back):\n%s%s", res.code, res.err, res.stdout, res.stderr)
	}
	status := tc.status
	if status == "" {
		status = "exit status 7"
	}
	last := lastReply(t, res.stdout)
	if last.Type != upgrader.ReplyError || last.Code != upgrader.CodeRolledBack ||
		!strings.Contains(last.Error, "at probation") || !strings.Contains(last.Error, status) {
		t.Errorf("baton upgrade's last reply: %+v, want a rolled_back error at probation with %q", last, status)
	}

	// The old process serves, and says why.
	if pid := s.Pid(t); pid != old {
		t.Errorf("the pid file names %d, want the old process %d", pid, old)
	}
	if root := s.Root(t); root.Pid != old {
		t.Errorf("GET / answered by %d, want the old process %d", root.Pid, old)
	}
	st := statusOf(t, ctl)
	if h := st.History; len(h) == 0 || h[len(h)-1].Result != "rolled_back" || h[len(h)-1].Step != "probation" {
		t.Errorf("baton status history: %+v, want the last upgrade rolled_back at probation", h)
	}
	m := scrape(t, s.URL)
	if got := m[`baton_upgrades_total{result="rolled_back"}`]; got != "1" {
		t.Errorf(`baton_upgrades_total{result="rolled_back"} = %q, want 1`, got)
	}

	// A later upgrade, without the fault, succeeds.
	newPid := upgradeOK(t, s)
	waitTaskRuns(t, s, 2)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, newPid)
	if c := checkTaskLog(t, s.taskLog); c.byPid[child] != 0 {
		t.Errorf("the new process on probation ran %d task runs; its tasks must wait for the probation's end", c.byPid[child])
	}
	assertOnlyAlive(t, s)
}

// lastReply decodes the last line of `baton upgrade --json`.
func lastReply(t *testing.T, out string) upgrader.ControlReply {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r upgrader.ControlReply
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Errorf("baton upgrade --json: %q: %v", out, err)
	}
	return r
}

// statusOf asks `baton status --json`.
func statusOf(t testing.TB, sock string) upgrader.Status {
	t.Helper()
	out, err := exec.Command(batonCLI, "status", "--socket", sock, "--json").Output()
	if err != nil {
		t.Fatalf("baton status: %v", err)
	}
	var st upgrader.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("baton status: %q: %v", out, err)
	}
	return st
}

// TestProbationSecondTrigger: a trigger during the probation is refused,
// to the old process (ErrProbation, the CLI's busy) and to the new one;
// the probation then ends and the upgrade completes.
func TestProbationSecondTrigger(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	s := startServiceIn(t, dir, demoFault, nil, "-probation", "2s", "-control", ctl)
	old := s.Pid(t)
	mark := s.Logs.Len()
	done := batonAsync("upgrade", "--wait", "--json", "--socket", ctl)
	line := waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "probation started: this process stopped accepting and stands by", Pid: old})
	child, _ := strconv.Atoi(line.Fields["child_pid"])
	again := <-batonAsync("upgrade", "--json", "--socket", ctl)
	if again.code != 1 || !strings.Contains(again.stdout, `"code":"busy"`) || !strings.Contains(again.stdout, "probation") {
		t.Errorf("second baton upgrade during the probation: exit %d, %s%s; want busy, naming the probation", again.code, again.stdout, again.stderr)
	}
	hup(t, s, old)
	hup(t, s, child)
	waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
	waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: child})
	first := <-done
	if first.code != 0 {
		t.Fatalf("the upgrade on probation: exit %d, %s%s", first.code, first.stdout, first.stderr)
	}
	for _, l := range s.Logs.Lines(mark) {
		if l.Msg == "upgrade failed: still serving" && !strings.Contains(l.Fields["err"], "probation") {
			t.Errorf("pid %d refused a trigger without naming the probation: %s", l.Pid, l.Fields["err"])
		}
	}
	if pid := s.Pid(t); pid != child {
		t.Errorf("after the probation the pid file names %d, want %d", pid, child)
	}
	if err := upgradertest.WaitExit(old, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	upgradeOK(t, s)
}

// onProbation triggers an upgrade of s once its tasks ran and waits until
// the new process is on probation; it returns the old and new pids and the
// log index of the trigger.
func onProbation(t *testing.T, s *service) (old, child, mark int) {
	t.Helper()
	old = s.Pid(t)
	waitTaskRuns(t, s, 2)
	mark = hup(t, s, old)
	line := waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "probation started: this process stopped accepting and stands by", Pid: old})
	child, _ = strconv.Atoi(line.Fields["child_pid"])
	return old, child, mark
}

// TestProbationOldProcessGoes: the old process stops (SIGTERM) or is
// killed (SIGKILL) during the probation. A stop ends the upgrade as a stop
// during any upgrade does: the new process is killed, the old one drains and
// writes the state file, and a restart from it continues every task with no
// gap and no repeat. A kill leaves the new process, which holds the whole
// state, to commit on its own: it serves, the pid file names it, its tasks
// continue with no gap and no repeat, and it upgrades later.
func TestProbationOldProcessGoes(t *testing.T) {
	t.Run("sigterm", func(t *testing.T) {
		dir := t.TempDir()
		args := []string{"-probation", "3s", "-state-file", filepath.Join(dir, "demo.state")}
		s := startServiceIn(t, dir, demoFault, nil, args...)
		old, child, mark := onProbation(t, s)
		if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for _, pid := range []int{child, old} {
			if err := upgradertest.WaitExit(pid, 15*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "state file written", Pid: old})
		assertOnlyAlive(t, s)
		q := startServiceIn(t, dir, demoFault, nil, args...)
		waitLine(t, q, 0, 5*time.Second, upgradertest.Match{Msg: "state restored from file"})
		waitTaskRuns(t, q, 2)
		stopAndWait(t, q.Proc)
		c := checkTaskLog(t, s.taskLog)
		assertTasksExact(t, relTasks, c, old)
		if c.byPid[child] != 0 {
			t.Errorf("the new process ran %d task runs on probation", c.byPid[child])
		}
	})
	t.Run("sigkill", func(t *testing.T) {
		s := startService(t, demoFault, nil, "-probation", "3s")
		old, child, mark := onProbation(t, s)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "ready", Pid: child})
		if pid := s.Pid(t); pid != child {
			t.Errorf("the pid file names %d, want the new process %d", pid, child)
		}
		if root := s.Root(t); root.Pid != child {
			t.Errorf("GET / answered by %d, want %d", root.Pid, child)
		}
		waitTaskRuns(t, s, 2)
		next := upgradeOK(t, s)
		waitTaskRuns(t, s, 2)
		stopAndWait(t, s.Proc)
		assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, child, next)
		assertOnlyAlive(t, s)
	})
}
