package tests

import (
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestOverlapAllowThroughUpgrades: two demo.sleep tasks with overlap allow,
// created at run time, through upgrades under load. "drained" (250 ms runs
// every 100 ms, 3 at once) finishes its runs within the freeze bound;
// "cutoff" (1.5 s runs every 200 ms, 4 at once) has every freeze cut its
// runs off, and the next process runs them again under their numbers
// before new ones. Across the processes each task's logged runs are
// numbered 1..n exactly once, the runs overlapped, and each new process
// said it reruns cut-off runs.
func TestOverlapAllowThroughUpgrades(t *testing.T) {
	const upgrades = 4
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-task-log", logPath, "-tasks", "0", "-task-freeze-timeout", "400ms")
	for _, body := range []map[string]any{
		{"id": "drained", "kind": "demo.sleep", "args": "250ms", "every": "100ms", "overlap": "allow", "max_concurrent": 3},
		{"id": "cutoff", "kind": "demo.sleep", "args": "1500ms", "every": "200ms", "overlap": "allow", "max_concurrent": 4},
	} {
		if code, d := taskCall(t, "POST", p.URL+"/tasks", body); code != http.StatusCreated {
			t.Fatalf("POST %v: %d %s", body["id"], code, d.Error)
		}
	}
	mostInFlight := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, d := taskCall(t, "GET", p.URL+"/tasks/cutoff", nil)
		mostInFlight = max(mostInFlight, d.InFlight)
	}
	if mostInFlight != 4 {
		t.Fatalf("cutoff had at most %d runs in flight, want its bound, 4", mostInFlight)
	}
	pids := []int{p.Pid(t)}
	r := underLoad(t, standardLoad(p.URL), func() {
		for i := range upgrades {
			mark := p.Logs.Len()
			u := nextGeneration(t, p, i, nil)
			pids = append(pids, u.NewPid)
			if _, err := p.Logs.WaitFrom(mark, 10*time.Second, upgradertest.Match{
				Msg: "worker: run may be duplicated: the previous process cut it off", Pid: u.NewPid}); err != nil {
				t.Fatalf("upgrade %d: the new process did not rerun cutoff's cut-off runs: %v\n%s", i, err, p.Logs)
			}
			time.Sleep(2500 * time.Millisecond) // the reruns finish, new runs start
		}
	})
	assertNoFailures(t, r)
	stopAndWait(t, p)

	seqs := map[string][]uint64{}
	ends := map[string][]time.Time{}
	byPid := map[string]map[int]int{}
	scanTaskLog(t, logPath, func(r taskRun) {
		seqs[r.id] = append(seqs[r.id], r.seq)
		ends[r.id] = append(ends[r.id], r.at)
		if byPid[r.id] == nil {
			byPid[r.id] = map[int]int{}
		}
		byPid[r.id][r.pid]++
	})
	for _, id := range []string{"drained", "cutoff"} {
		got := slices.Clone(seqs[id])
		slices.Sort(got)
		for i, q := range got {
			if q != uint64(i+1) {
				t.Fatalf("%s: logged runs %v, want 1..%d once each", id, got, len(got))
			}
		}
		for _, pid := range pids {
			if byPid[id][pid] == 0 {
				t.Errorf("%s: no run logged by pid %d: %v", id, pid, byPid[id])
			}
		}
		t.Logf("%s: %d runs, 1..%d once each, by pid %v", id, len(got), len(got), byPid[id])
	}
	// 250 ms runs one after the other end at least 250 ms apart; runs that
	// overlap end closer.
	close := 0
	e := ends["drained"]
	for i := 1; i < len(e); i++ {
		if e[i].Sub(e[i-1]) < 200*time.Millisecond {
			close++
		}
	}
	if close < len(e)/2 {
		t.Errorf("drained: %d of %d runs ended within 200 ms of the one before: they did not overlap", close, len(e))
	}
}
