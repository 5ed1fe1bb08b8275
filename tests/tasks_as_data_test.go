package tests

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestTasksAsDataSurviveUpgradesAndRestart: with -tasks-as-data the demo's
// -tasks tasks are data of kind demo.counter. The first generation creates
// them; every later one, through upgrades and a restart from the state
// file, registers the kind only and restores them (the restore logs them
// as data tasks created, none registered by ID): a task deleted over
// HTTP stays deleted, none is added again, and every task's runs in the
// log are numbered 1, 2, 3... with no repeat and no hole.
func TestTasksAsDataSurviveUpgradesAndRestart(t *testing.T) {
	const (
		n        = 2000
		interval = 200 * time.Millisecond
		upgrades = 5
		deleted  = "task-00007"
	)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	args := []string{"-tasks", strconv.Itoa(n), "-tasks-as-data", "-task-interval", interval.String(),
		"-task-log", logPath, "-state-file", filepath.Join(dir, "demo.state")}
	p := demotest.StartEnv(t, nil, demoV1, dir, args...)
	waitMinRuns(t, p, 1, 10*time.Second)
	if code, d := taskCall(t, "GET", p.URL+"/tasks/task-00001", nil); code != http.StatusOK || d.Kind != "demo.counter" {
		t.Fatalf("GET task-00001: %d %+v, want a task of kind demo.counter", code, d)
	}
	if code, _ := taskCall(t, "DELETE", p.URL+"/tasks/"+deleted, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE %s: %d", deleted, code)
	}
	first := p.Pid(t)
	pids := map[int]bool{first: true}
	checkRestored := func(logs *upgradertest.Logs, pid int, how string) {
		t.Helper()
		line, err := logs.Wait(30*time.Second, upgradertest.Match{Msg: "worker: restored snapshot", Pid: pid})
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if line.Fields["tasks"] != "0" || line.Fields["data_tasks"] != strconv.Itoa(n-1) {
			t.Fatalf("%s: restored %s tasks by ID and %s data tasks, want 0 and %d", how, line.Fields["tasks"], line.Fields["data_tasks"], n-1)
		}
	}
	for i := range upgrades {
		u := nextGeneration(t, p, i, pids)
		checkRestored(p.Logs, u.NewPid, "upgrade "+strconv.Itoa(i))
		if st := getTasks(t, p, "?limit=1"); st.Count != n-1 {
			t.Fatalf("after upgrade %d: %d tasks, want %d", i, st.Count, n-1)
		}
		time.Sleep(2 * interval)
	}
	stopAndWait(t, p)

	q := demotest.StartEnv(t, nil, demoV1, dir, args...)
	restarted := q.Pid(t)
	checkRestored(q.Logs, restarted, "restart")
	waitMinRuns(t, q, uint64(upgrades), 20*time.Second)
	if st := getTasks(t, q, "?limit=1"); st.Count != n-1 {
		t.Fatalf("after the restart: %d tasks, want %d", st.Count, n-1)
	}
	if code, _ := taskCall(t, "GET", q.URL+"/tasks/"+deleted, nil); code != http.StatusNotFound {
		t.Fatalf("GET %s, deleted before the upgrades: %d, want 404", deleted, code)
	}
	stopAndWait(t, q)

	runs := readTaskLog(t, logPath)
	if len(runs) != n {
		t.Fatalf("the log has runs of %d tasks, want %d", len(runs), n)
	}
	for id, rs := range runs {
		for i, run := range rs {
			if run.seq != uint64(i+1) {
				t.Fatalf("task %s: run %d has seq %d (pid %d): runs lost or repeated", id, i+1, run.seq, run.pid)
			}
		}
		if id == deleted {
			for _, run := range rs {
				if run.pid != first {
					t.Errorf("task %s, deleted in the first generation, ran in pid %d", id, run.pid)
				}
			}
			continue
		}
		if last := rs[len(rs)-1]; last.pid != restarted {
			t.Errorf("task %s did not run after the restart: last run in pid %d", id, last.pid)
		}
	}
}
