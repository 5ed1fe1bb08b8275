package tests

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// scaleTasks is how many tasks TestScaleTasksUpgrade runs: 1,000,000, or
// BATON_SCALE_TASKS.
func scaleTasks(t *testing.T) int {
	if os.Getenv("BATON_SCALE") == "" {
		t.Skip("set BATON_SCALE=1 to run the million-task upgrade (about two minutes and 2 GB)")
	}
	n := 1_000_000
	if v := os.Getenv("BATON_SCALE_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("BATON_SCALE_TASKS=%q", v)
		}
	}
	return n
}

// TestScaleTasksUpgrade: a million tasks (every 10 s, 10 s of jitter, as in
// issue 17's measurement) go through an upgrade with no run lost or run
// twice; with BATON_SCALE_DATA=1 they are data tasks (-tasks-as-data). Every task has run in the old process before the upgrade and in
// the new one after it, and its runs in the task log, read as a stream,
// are numbered 1, 2, 3... with no repeat and no hole. It logs the figures
// of the upgrade (the switch as the old process reports it, the old
// process's RSS and the new one's peak), which it does not assert: the
// benchmarks measure; this checks that nothing is lost at that scale.
func TestScaleTasksUpgrade(t *testing.T) {
	n := scaleTasks(t)
	const (
		interval = 10 * time.Second
		jitter   = 10 * time.Second
	)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	args := []string{"-addr", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "demo.pid"), "-tasks", strconv.Itoa(n),
		"-task-interval", interval.String(), "-task-jitter", jitter.String(), "-task-log", logPath,
		"-upgrade-timeout", "2m", "-drain", "30s"}
	if os.Getenv("BATON_SCALE_DATA") != "" {
		args = append(args, "-tasks-as-data") // the tasks as data: restored, not registered, by the new process
	}
	s := upgradertest.Start(t, demoV1, upgradertest.Options{Dir: dir, Name: "baton-demo", PIDFile: "demo.pid",
		Args: args, Serving: "serving", Output: io.Discard, StartTimeout: 2 * time.Minute})
	p := &demotest.Proc{Service: s, Addr: strings.TrimPrefix(s.URL, "http://")}

	// Every task runs once within interval + jitter of its Add.
	waitMinRuns(t, p, 1, 2*(interval+jitter))
	oldRSS := procStatusKB(t, p.Pid(t), "VmRSS")
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade failed: %s", u.Err)
	}
	if err := upgradertest.WaitExit(u.OldPid, time.Minute); err != nil {
		t.Fatal(err)
	}
	line, _ := p.Logs.Wait(time.Second, upgradertest.Match{Msg: "upgraded", Pid: u.OldPid})
	// Every task runs in the new process too, within an interval and its
	// jitter of the restore (the log, buffered, is read after the stop).
	time.Sleep(interval + jitter + 5*time.Second)
	newHWM := procStatusKB(t, u.NewPid, "VmHWM")
	stats := getTasks(t, p, "?limit=1")
	stopAndWait(t, p)

	if stats.Count != n {
		t.Fatalf("%d tasks after the upgrade, want %d", stats.Count, n)
	}
	last := make(map[string]uint64, n)
	byNew := make(map[string]bool, n)
	var lines uint64
	scanTaskLog(t, logPath, func(r taskRun) {
		lines++
		if r.seq != last[r.id]+1 {
			t.Fatalf("task %s: run seq %d (pid %d) after seq %d: runs lost or repeated", r.id, r.seq, r.pid, last[r.id])
		}
		last[r.id] = r.seq
		if r.pid == u.NewPid {
			byNew[r.id] = true
		}
	})
	if len(last) != n || len(byNew) != n {
		t.Fatalf("%d tasks in the log, %d of them run by the new process; want %d", len(last), len(byNew), n)
	}
	if lines < stats.Runs {
		t.Fatalf("the log has %d runs, the process counted %d", lines, stats.Runs)
	}
	t.Logf("%d tasks, %d runs, none lost or repeated; upgrade %s (pause %s as the new process saw it); old RSS %d MiB, new peak %d MiB (%.2fx)",
		n, lines, line.Fields["duration"], time.Duration(stats.PauseNs), oldRSS>>10, newHWM>>10, float64(newHWM)/float64(oldRSS))
}

// waitMinRuns waits until every task has run at least runs times.
func waitMinRuns(t *testing.T, p *demotest.Proc, runs uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := getTasks(t, p, "?limit=1").MinRuns
		if got >= runs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v some task has run %d times, want %d", within, got, runs)
		}
		time.Sleep(time.Second)
	}
}

// procStatusKB returns a kB field of /proc/pid/status, such as VmRSS.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, l)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
