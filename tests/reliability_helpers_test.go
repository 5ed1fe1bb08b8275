package tests

// The reliability suite (issue 7): every way an upgrade can go wrong that
// baton claims to survive, each under HTTP load with background tasks
// running, and what a user sees where it cannot be survived. Each case
// checks the same things: what the clients saw (upgradertest.LoadReport),
// every task's run sequence in the task log, which process serves, that no
// process of the service outlives its role, and that the old process's fds
// and goroutines are back where they were. RELIABILITY.md lists every case
// and its result.
//
// This file holds what the cases share: the service with its task log,
// and the checks every case makes. The cases are in reliability_faults_test.go
// (a process fails or is stopped mid-upgrade), reliability_limits_test.go
// (fds, snapshot size, disk, TMPDIR) and reliability_badinput_test.go
// (environments and requests the service must refuse).

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
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

// assertPIDFileAlone checks that the pid file names pid and that nothing
// else in its directory has a name that starts with the pid file's: a new
// process that failed or was killed before it was ready left no file of its
// own beside it.
func assertPIDFileAlone(t *testing.T, s *service, pid int) {
	t.Helper()
	if got := s.Pid(t); got != pid {
		t.Errorf("the pid file names %d, want %d", got, pid)
	}
	base := filepath.Base(s.PIDFile)
	entries, err := os.ReadDir(filepath.Dir(s.PIDFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != base && strings.HasPrefix(e.Name(), base) {
			t.Errorf("%s left beside the pid file %s", e.Name(), base)
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
