package tests

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// The bounds a hung task is given in these tests: the freeze bound cuts
// its run off at an upgrade, the stop bound abandons it when the process
// stops, the drain bounds the graceful part of the stop.
const (
	hungFreeze = 300 * time.Millisecond
	hungStop   = time.Second
	hungDrain  = 2 * time.Second
	// hungExit is how long a stopping process may take with a hung task:
	// the drain, then the stop bound, and a margin for a shared machine.
	hungExit = hungDrain + hungStop + 5*time.Second
)

// startHung starts baton-demo with one task whose runs ignore their
// context and never return, and waits until its first run is in flight.
func startHung(t *testing.T) (*demotest.Proc, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", "2", "-hung-tasks", "1", "-task-interval", "50ms",
		"-task-freeze-timeout", hungFreeze.String(), "-task-stop-timeout", hungStop.String(),
		"-drain", hungDrain.String(), "-control", sock)
	waitHungRunning(t, p)
	return p, sock
}

// waitHungRunning waits until the hung task's run is in flight.
func waitHungRunning(t *testing.T, p *demotest.Proc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := getTasks(t, p, "?id=hung-00000")
		if len(r.Tasks) == 1 && r.Tasks[0].Status == "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hung task never started: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workerStatus asks `baton status --json` for the demo's worker component.
func workerStatus(t *testing.T, sock string) map[string]any {
	t.Helper()
	out, err := exec.Command(batonCLI, "status", "--socket", sock, "--json").Output()
	if err != nil {
		t.Fatalf("baton status: %v", err)
	}
	var st upgrader.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("baton status: %q: %v", out, err)
	}
	w, ok := st.Components["worker"].(map[string]any)
	if !ok {
		t.Fatalf("baton status has no worker component: %s", out)
	}
	return w
}

// TestHungTaskAtUpgrade: a task whose run ignores its context does not
// hold the old process: it is cut off at the freeze bound, abandoned at
// the stop bound (logged), and the old process exits; the new process
// knows the run may be duplicated (log, baton status), and the next
// upgrade is not refused as "still draining".
func TestHungTaskAtUpgrade(t *testing.T) {
	p, sock := startHung(t)
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade: %s", u.Err)
	}
	upgraded := time.Now()
	if err := upgradertest.WaitExit(u.OldPid, hungExit); err != nil {
		t.Fatalf("the old process is held by its hung task: %v\n%s", err, p.Logs)
	}
	t.Logf("the old process exited %v after the new one served", time.Since(upgraded).Round(time.Millisecond))
	line, err := p.Logs.Wait(time.Second, upgradertest.Match{Msg: "worker: run abandoned: it did not return within the stop timeout", Pid: u.OldPid})
	if err != nil || line.Fields["task"] != "hung-00000" || line.Fields["seq"] != "1" {
		t.Errorf("the old process did not report the abandoned run: %v %q", err, line.Raw)
	}
	line, err = p.Logs.Wait(time.Second, upgradertest.Match{Msg: "worker: run may be duplicated: the previous process cut it off", Pid: u.NewPid})
	if err != nil || line.Fields["task"] != "hung-00000" || line.Fields["seq"] != "1" {
		t.Errorf("the new process did not report the possibly duplicated run: %v %q", err, line.Raw)
	}
	if w := workerStatus(t, sock); w["maybe_duplicated"] != float64(1) {
		t.Errorf("baton status: worker %v, want maybe_duplicated 1", w)
	}

	waitHungRunning(t, p) // the re-run hangs too, in the new process
	u2 := p.Upgrade(t)
	if u2.Err != "" {
		t.Fatalf("second upgrade: %s", u2.Err)
	}
	if err := upgradertest.WaitExit(u2.OldPid, hungExit); err != nil {
		t.Fatalf("the second old process is held by its hung task: %v", err)
	}
	if r := p.Root(t); r.Pid != u2.NewPid {
		t.Errorf("served by %d, want %d", r.Pid, u2.NewPid)
	}
}

// TestHungTaskAtStop: SIGTERM stops a process whose task ignores its
// context within the drain and the stop bound, reporting the abandoned run.
func TestHungTaskAtStop(t *testing.T) {
	p, _ := startHung(t)
	pid := p.Pid(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := upgradertest.WaitExit(pid, hungExit); err != nil {
		t.Fatalf("the process is held by its hung task: %v\n%s", err, p.Logs)
	}
	t.Logf("the process exited %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	line, err := p.Logs.Wait(time.Second, upgradertest.Match{Msg: "worker: run abandoned: it did not return within the stop timeout", Pid: pid})
	if err != nil || line.Fields["task"] != "hung-00000" {
		t.Errorf("the abandoned run was not reported: %v %q", err, line.Raw)
	}
}

// TestRestoreClampsFarDueTimes: due times in the state file an hour
// ahead (as a wall clock set back an hour between processes leaves them;
// here the first process ran its tasks hourly, the next every 50 ms) do
// not delay the tasks by the hour: they run within their interval.
func TestRestoreClampsFarDueTimes(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state")
	first := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", "2", "-task-interval", "1h", "-state-file", stateFile)
	stopAndWait(t, first)

	p := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", "2", "-task-interval", "50ms", "-state-file", stateFile)
	if _, err := p.Logs.Wait(5*time.Second, upgradertest.Match{Msg: "worker: restored snapshot"}); err != nil {
		t.Fatalf("the state file was not restored: %v\n%s", err, p.Logs)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := getTasks(t, p, "?limit=2")
		if r.MinRuns >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored tasks wait for the hour: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCatchUpAfterDowntime: a catch-up task (every 50 ms) stopped for 3 s,
// 60 schedule points, catches up on at most its limit of them, spaced,
// never in a burst: the task log shows no two runs of the new process
// within a few milliseconds and no more runs than the limit allows.
func TestCatchUpAfterDowntime(t *testing.T) {
	const (
		interval = 50 * time.Millisecond
		downtime = 3 * time.Second
	)
	dir := t.TempDir()
	stateFile, taskLog := filepath.Join(dir, "state"), filepath.Join(dir, "tasks.log")
	args := []string{"-tasks", "1", "-task-interval", interval.String(), "-state-file", stateFile, "-task-log", taskLog}
	first := demotest.StartEnv(t, nil, demoV1, dir, args...)
	time.Sleep(4 * interval) // a few runs
	stopAndWait(t, first)
	time.Sleep(downtime) // the downtime is what is tested

	p := demotest.StartEnv(t, nil, demoV1, dir, args...)
	pid := p.Pid(t)
	time.Sleep(time.Second)
	stopAndWait(t, p)

	var runs []taskRun
	for _, r := range readTaskLog(t, taskLog)["task-00000"] {
		if r.pid == pid {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		t.Fatal("no run in the restarted process")
	}
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].at.Sub(runs[i-1].at); gap < 3*time.Millisecond {
			t.Fatalf("runs %d and %d of the restarted process %v apart: a burst", runs[i-1].seq, runs[i].seq, gap)
		}
	}
	// In its first second: the schedule's 20 runs, the limit's 10
	// catch-up runs and a margin, not the 60 missed points.
	if len(runs) > 34 {
		t.Errorf("%d runs in the restarted process's first second", len(runs))
	}
	t.Logf("%d runs in the restarted process's first second after %v of downtime", len(runs), downtime)
}
