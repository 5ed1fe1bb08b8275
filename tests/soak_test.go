package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
)

// soakUpgrades is the number of upgrades TestSoak runs: 100 in the normal
// run, BATON_SOAK=n for more (RELIABILITY.md reports BATON_SOAK=1000).
func soakUpgrades(t *testing.T) int {
	t.Helper()
	v := os.Getenv("BATON_SOAK")
	if v == "" {
		return 100
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 10 {
		t.Fatalf("BATON_SOAK=%q: want a number of upgrades, at least 10", v)
	}
	return n
}

// TestSoak: consecutive upgrades under continuous load (fresh and kept-alive
// connections, GET and POST) with 10,000 background tasks. No request may
// fail, every task's runs must be numbered without a gap or a repeat across
// all the generations, and what each generation holds once it serves alone
// (fds, goroutines, RSS) must stay flat: the mean over the last 100
// generations (the last fifth in a shorter run) against the first.
func TestSoak(t *testing.T) {
	const (
		tasks = 10000
		// One run per task per second keeps the task log of a
		// 1000-upgrade soak near 100 MB; the jitter spreads the runs
		// over the second, so that every generation runs some.
		interval = time.Second
	)
	upgrades := soakUpgrades(t)
	window := min(100, upgrades/5)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-tasks", strconv.Itoa(tasks), "-task-interval", interval.String(),
		"-task-jitter", interval.String(), "-task-log", logPath, "-drain", "10s")
	s := &service{Proc: p, taskLog: logPath, exe: p.Bin}
	start := time.Now()

	var samples []usage
	pids := map[int]bool{p.Pid(t): true}
	var serving []time.Duration
	r := underLoad(t, standardLoad(p.URL), func() {
		for i := 0; i < upgrades; i++ {
			u := nextGeneration(t, p, i, pids)
			serving = append(serving, u.Serving)
			// The new generation now serves alone, under the load.
			samples = append(samples, usage{fds: allFds(u.NewPid), goroutines: goroutinesOf(t, s, u.NewPid), rssKiB: rssOf(t, u.NewPid)})
		}
	})
	elapsed := time.Since(start)
	assertNoFailures(t, r)
	assertStateIntact(t, p, r, upgrades)
	last := p.Pid(t)
	stopAndWait(t, p)
	c := checkTaskLog(t, logPath)
	assertTasksExact(t, tasks, c)
	assertOnlyAlive(t, s)

	first, final := meanUsage(samples[:window]), meanUsage(samples[len(samples)-window:])
	t.Logf("%d upgrades in %v (%.0f ms each) under %s", upgrades, elapsed.Round(time.Second),
		float64(elapsed.Milliseconds())/float64(upgrades), r)
	t.Logf("signal -> new process serving: median %v, max %v", median(serving), slices.Max(serving))
	t.Logf("tasks: %s; last generation pid %d", c, last)
	t.Logf("per generation, serving alone: first %d: %s; last %d: %s", window, first, window, final)
	// Each generation is a new process: what could accumulate is what one
	// hands to the next, one or more fds per generation, so growth over the
	// run would be tens. The samples include the load's connections, whose
	// number varies by a few from one sample to the next.
	if final.fds > first.fds+5 {
		t.Errorf("fds grew from %.1f to %.1f (more than 5)", first.fds, final.fds)
	}
	if final.goroutines > first.goroutines+5 {
		t.Errorf("goroutines grew from %.1f to %.1f", first.goroutines, final.goroutines)
	}
	if final.rssKiB > first.rssKiB*1.10+2048 {
		t.Errorf("RSS grew from %.0f KiB to %.0f KiB", first.rssKiB, final.rssKiB)
	}
}

// allFds counts every descriptor pid has open.
func allFds(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries)
}

// meanUsageOf is the mean of usage samples.
type meanUsageOf struct{ fds, goroutines, rssKiB float64 }

func (m meanUsageOf) String() string {
	return fmt.Sprintf("fds %.1f, goroutines %.1f, RSS %.1f MiB", m.fds, m.goroutines, m.rssKiB/1024)
}

func meanUsage(us []usage) meanUsageOf {
	var m meanUsageOf
	for _, u := range us {
		m.fds += float64(u.fds)
		m.goroutines += float64(u.goroutines)
		m.rssKiB += float64(u.rssKiB)
	}
	n := float64(len(us))
	return meanUsageOf{m.fds / n, m.goroutines / n, m.rssKiB / n}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	return s[len(s)/2]
}
