package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// taskRun is one line of baton-demo's -task-log: "task_id seq pid unix_ms".
type taskRun struct {
	id  string
	seq uint64
	pid int
	at  time.Time
}

// scanTaskLog reads the task log one line at a time (a soak writes
// millions) and hands each run to f, in file order.
func scanTaskLog(t *testing.T, path string, f func(taskRun)) {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			t.Fatalf("bad task log line %q", sc.Text())
		}
		seq, err1 := strconv.ParseUint(fields[1], 10, 64)
		pid, err2 := strconv.Atoi(fields[2])
		ms, err3 := strconv.ParseInt(fields[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("bad task log line %q", sc.Text())
		}
		f(taskRun{id: fields[0], seq: seq, pid: pid, at: time.UnixMilli(ms)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// readTaskLog parses the task log into each task's runs, in file order.
func readTaskLog(t *testing.T, path string) map[string][]taskRun {
	t.Helper()
	runs := map[string][]taskRun{}
	scanTaskLog(t, path, func(r taskRun) { runs[r.id] = append(runs[r.id], r) })
	return runs
}

type tasksReply struct {
	Count    int    `json:"count"`
	Runs     uint64 `json:"runs_total"`
	MinRuns  uint64 `json:"min_runs"`
	MaxRuns  uint64 `json:"max_runs"`
	Orphaned int    `json:"orphaned"`
	PauseNs  int64  `json:"pause_ns"`
	Tasks    []struct {
		ID          string `json:"id"`
		Runs        uint64 `json:"runs"`
		Failures    uint64 `json:"failures"`
		Consecutive uint64 `json:"consecutive_failures"`
		Status      string `json:"status"`
	} `json:"tasks"`
}

func getTasks(t testing.TB, p *demotest.Proc, query string) tasksReply {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(p.URL + "/tasks" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r tasksReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// stopAndWait stops the serving generation gracefully, which flushes the
// task log.
func stopAndWait(t *testing.T, p *demotest.Proc) {
	t.Helper()
	pid := p.Pid(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := upgradertest.WaitExit(pid, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestTasksSurviveUpgrades: 10,000 tasks every 100 ms through 50 upgrades
// under HTTP load. Every task's runs, read from the task log the processes
// write, are numbered 1, 2, 3... with no repeat and no hole, however many
// processes ran them; no two runs of a task are further apart than the
// schedule and one handoff allow; run counts match the wall time.
func TestTasksSurviveUpgrades(t *testing.T) {
	const (
		tasks    = 10000
		interval = 100 * time.Millisecond
		upgrades = 50
	)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	start := time.Now()
	p := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", strconv.Itoa(tasks),
		"-task-interval", interval.String(), "-task-log", logPath)
	r := underLoad(t, standardLoad(p.URL), func() {
		next := time.NewTicker(150 * time.Millisecond)
		defer next.Stop()
		for i := 0; i < upgrades; i++ {
			<-next.C
			nextGeneration(t, p, i, nil)
		}
	})
	assertNoFailures(t, r)
	stats := getTasks(t, p, "?limit=1")
	elapsed := time.Since(start)
	stopAndWait(t, p)

	if stats.Count != tasks {
		t.Fatalf("%d tasks, want %d", stats.Count, tasks)
	}
	// Each task first runs one interval after it was added, at start-up.
	want := uint64(elapsed / interval)
	if stats.MaxRuns > want+1 || stats.MinRuns+2 < want {
		t.Errorf("runs per task %d..%d after %v; the schedule allows %d", stats.MinRuns, stats.MaxRuns, elapsed, want)
	}

	runs := readTaskLog(t, logPath)
	if len(runs) != tasks {
		t.Fatalf("the log has runs of %d tasks, want %d", len(runs), tasks)
	}
	var maxGap time.Duration
	pids := map[int]bool{}
	for id, rs := range runs {
		for i, run := range rs {
			pids[run.pid] = true
			if run.seq != uint64(i+1) {
				t.Fatalf("task %s: run %d has seq %d (pid %d): runs lost or repeated", id, i+1, run.seq, run.pid)
			}
			if i > 0 {
				maxGap = max(maxGap, run.at.Sub(rs[i-1].at))
			}
		}
	}
	// Every generation lives longer than an interval, except that the
	// first may be upgraded before its first run.
	if len(pids) < upgrades {
		t.Errorf("tasks ran in %d processes, want at least %d", len(pids), upgrades)
	}
	// Catch-up runs the runs a handoff delayed at once, so the gap between
	// two runs is at most an interval plus one handoff (generous: the
	// machine is shared with the load and the race detector).
	if maxGap > interval+time.Second {
		t.Errorf("largest gap between two runs of a task: %v", maxGap)
	}
	t.Logf("%d tasks, %d runs in %v over %d processes; largest gap between two runs of a task %v",
		tasks, stats.Runs, elapsed.Round(time.Millisecond), len(pids), maxGap)
}

// TestPanickingTaskIsSupervised: a task that panics every time is retried
// with backoff, does not disturb the others, and keeps its backoff across
// an upgrade.
func TestPanickingTaskIsSupervised(t *testing.T) {
	p := demotest.Start(t, demoV1, "-tasks", "50", "-bad-tasks", "1", "-task-interval", "50ms")
	bad := func() (uint64, uint64, string) {
		r := getTasks(t, p, "?id=bad-00000")
		if len(r.Tasks) != 1 {
			t.Fatalf("bad task missing: %+v", r)
		}
		return r.Tasks[0].Failures, r.Tasks[0].Consecutive, r.Tasks[0].Status
	}
	if line, err := p.Logs.Wait(10*time.Second, upgradertest.Match{Msg: "worker: run panicked"}); err != nil || line.Fields["task"] != "bad-00000" {
		t.Fatalf("the panic was not logged with the task's ID: %v %q", err, line.Raw)
	}
	deadline := time.Now().Add(10 * time.Second)
	var failures, consecutive uint64
	var status string
	for failures, consecutive, status = bad(); failures < 3 && time.Now().Before(deadline); failures, consecutive, status = bad() {
		time.Sleep(50 * time.Millisecond)
	}
	if failures < 3 || consecutive != failures {
		t.Fatalf("bad task: %d failures, %d consecutive, status %s", failures, consecutive, status)
	}
	good := getTasks(t, p, "?id=task-00001")
	if good.Tasks[0].Failures != 0 || good.Tasks[0].Runs == 0 {
		t.Errorf("a good task was disturbed: %+v", good.Tasks[0])
	}
	if u := p.Upgrade(t); u.Err != "" {
		t.Fatal(u.Err)
	}
	f2, c2, _ := bad()
	if c2 < consecutive || f2 < failures {
		t.Errorf("after the upgrade the bad task has %d failures, %d consecutive; before it had %d, %d: backoff reset", f2, c2, failures, consecutive)
	}
	// Capped exponential backoff: the failures grow far slower than the
	// 50 ms schedule would.
	time.Sleep(2 * time.Second)
	f3, _, _ := bad()
	good2 := getTasks(t, p, "?id=task-00001")
	if f3-f2 > 6 {
		t.Errorf("%d failures in 2 s with backoff", f3-f2)
	}
	if good2.Tasks[0].Runs < good.Tasks[0].Runs+20 || good2.Tasks[0].Failures != 0 {
		t.Errorf("good task: %+v -> %+v", good.Tasks[0], good2.Tasks[0])
	}
}

// TestTaskStateMigration: v1 -> v2 changes the task state's type (an
// 8-byte counter becomes JSON) and retires task-00000, which the new
// process reports and keeps in its snapshot for one generation.
func TestTaskStateMigration(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", "20", "-task-interval", "50ms", "-task-log", logPath)
	time.Sleep(300 * time.Millisecond) // let every task run a few times
	upgradertest.Install(t, demoV2, p.Bin)
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatal(u.Err)
	}
	line, err := p.Logs.Wait(5*time.Second, upgradertest.Match{
		Msg: "worker: task in snapshot is not registered; its state is kept for one generation and adopted if it is added", Pid: u.NewPid})
	if err != nil || line.Fields["task"] != "task-00000" {
		t.Errorf("the new process did not report the retired task: %v %q", err, line.Raw)
	}
	r := getTasks(t, p, "?limit=1")
	if r.Orphaned != 1 || r.Count != 19 {
		t.Errorf("after v1 -> v2: %d tasks, %d orphaned; want 19 and 1", r.Count, r.Orphaned)
	}
	time.Sleep(300 * time.Millisecond)
	stopAndWait(t, p)
	runs := readTaskLog(t, logPath)
	rs := runs["task-00001"]
	seen := map[int]bool{}
	for i, run := range rs {
		seen[run.pid] = true
		if run.seq != uint64(i+1) {
			t.Fatalf("task-00001 run %d has seq %d", i+1, run.seq)
		}
	}
	if !seen[u.NewPid] || !seen[u.OldPid] {
		t.Errorf("task-00001 did not run in both versions: %v", seen)
	}
	for _, run := range runs["task-00000"] {
		if run.pid == u.NewPid {
			t.Errorf("the retired task ran in v2")
		}
	}
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) != 20 {
		t.Errorf("runs of %d tasks in the log: %v", len(ids), fmt.Sprint(ids))
	}
}
