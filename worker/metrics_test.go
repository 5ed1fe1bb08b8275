package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewPedanticRegistry()
	s, _ := newTest(t, Options{Registerer: reg, InitialBackoff: time.Second, now: clk.Now})
	mustAdd(t, s,
		Task{ID: "ok", Every: time.Second, Run: nop},
		Task{ID: "skips", Every: time.Second, Run: nop},
		Task{ID: "fails", Every: time.Second, Run: func(context.Context, *Run) error { return errors.New("x") }},
		Task{ID: "panics", Every: time.Second, Run: func(context.Context, *Run) error { panic("y") }},
		Task{ID: "done", Run: nop},
	)
	clk.Advance(time.Second)
	stepAll(t, s, 10)
	if err := s.Remove("ok"); err != nil {
		t.Fatal(err)
	}
	// At 4s: skips stands for 2s, 3s and 4s (2 dropped), fails and panics
	// fail their retries.
	clk.Advance(3 * time.Second)
	stepAll(t, s, 10)

	const counters = `
# HELP baton_worker_cut_off_runs_total Runs abandoned at the freeze bound or a hard stop, to run again.
# TYPE baton_worker_cut_off_runs_total counter
baton_worker_cut_off_runs_total 0
# HELP baton_worker_orphaned_tasks Tasks in the snapshot that this binary does not run: of a kind it does not register (kept until a binary with the kind adopts them), or registered by ID elsewhere only (kept for one generation).
# TYPE baton_worker_orphaned_tasks gauge
baton_worker_orphaned_tasks 0
# HELP baton_worker_run_failures_total Runs that returned an error or panicked, across upgrades.
# TYPE baton_worker_run_failures_total counter
baton_worker_run_failures_total 4
# HELP baton_worker_run_panics_total Runs that panicked, across upgrades.
# TYPE baton_worker_run_panics_total counter
baton_worker_run_panics_total 2
# HELP baton_worker_runs_total Finished runs, across upgrades.
# TYPE baton_worker_runs_total counter
baton_worker_runs_total 8
# HELP baton_worker_skipped_runs_total Schedule points dropped by the skip-late policy, across upgrades.
# TYPE baton_worker_skipped_runs_total counter
baton_worker_skipped_runs_total 2
`
	const tasks = `
# HELP baton_worker_tasks Registered tasks by status.
# TYPE baton_worker_tasks gauge
baton_worker_tasks{status="backoff"} %d
baton_worker_tasks{status="done"} 1
baton_worker_tasks{status="frozen"} %d
baton_worker_tasks{status="idle"} %d
baton_worker_tasks{status="paused"} 0
baton_worker_tasks{status="running"} 0
`
	names := []string{"baton_worker_runs_total", "baton_worker_run_failures_total", "baton_worker_run_panics_total",
		"baton_worker_skipped_runs_total", "baton_worker_cut_off_runs_total", "baton_worker_orphaned_tasks"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(counters), names...); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(tasks, 2, 0, 1)), "baton_worker_tasks"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "baton_worker_run_duration_seconds", "baton_worker_schedule_lag_seconds"); n != 2 {
		t.Fatalf("%d histograms", n)
	}
	if got := histogramCount(t, reg, "baton_worker_run_duration_seconds"); got != 8 {
		t.Fatalf("duration observations %d, want 8", got)
	}

	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(tasks, 0, 3, 0)), "baton_worker_tasks"); err != nil {
		t.Fatal(err)
	}
	if got := histogramCount(t, reg, "baton_worker_freeze_duration_seconds"); got != 1 {
		t.Fatalf("freeze observations %d", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	// The counters continue from the snapshot in the next process.
	snap := capture(t, s)
	reg2 := prometheus.NewPedanticRegistry()
	s2, _ := newTest(t, Options{Registerer: reg2, now: clk.Now})
	mustAdd(t, s2, Task{ID: "fails", Every: time.Second, Run: nop})
	if err := s2.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	seeded := strings.Replace(counters, "baton_worker_orphaned_tasks 0", "baton_worker_orphaned_tasks 3", 1)
	if err := testutil.GatherAndCompare(reg2, strings.NewReader(seeded), names...); err != nil {
		t.Fatal(err)
	}

	// A second supervisor on the same registry needs its own prefix.
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Fatal("duplicate registration succeeded")
	}
	if _, err := New(Options{Registerer: prometheus.WrapRegistererWithPrefix("pool_b_", reg)}); err != nil {
		t.Fatal(err)
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
