package tests

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestOverlapAllowThroughUpgrades: two demo.sleep tasks with overlap allow,
// created at run time, through upgrades under load. "drained" (100 ms runs
// every 40 ms, 3 at once) finishes its runs within the freeze bound
// (400 ms); "cutoff" (1.5 s runs every 200 ms, 4 at once: their starts are
// 200 ms apart or more, so one of them is always less than 1.1 s old) has
// every freeze cut a run off, and the next process runs them again under
// their numbers before new ones. Across the processes each task's logged runs are
// numbered 1..n without a gap; drained's exactly once, cutoff's once but
// for a run that ended its work just as the freeze bound cut it off
// (at least once, as the package doc says of cut-off runs), which may be
// logged again by the next process, never further. The runs overlapped,
// and each new process said it reruns cut-off runs.
func TestOverlapAllowThroughUpgrades(t *testing.T) {
	const upgrades = 4
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-task-log", logPath, "-tasks", "0", "-task-freeze-timeout", "400ms")
	for _, body := range []map[string]any{
		{"id": "drained", "kind": "demo.sleep", "args": "100ms", "every": "40ms", "overlap": "allow", "max_concurrent": 3},
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

	gen := map[int]int{} // pid -> generation
	for i, pid := range pids {
		gen[pid] = i
	}
	gens := map[string]map[uint64][]int{} // task -> seq -> generations that logged it
	ends := map[string][]time.Time{}
	byPid := map[string]map[int]int{}
	scanTaskLog(t, logPath, func(r taskRun) {
		if gens[r.id] == nil {
			gens[r.id], byPid[r.id] = map[uint64][]int{}, map[int]int{}
		}
		gens[r.id][r.seq] = append(gens[r.id][r.seq], gen[r.pid])
		ends[r.id] = append(ends[r.id], r.at)
		byPid[r.id][r.pid]++
	})
	for _, id := range []string{"drained", "cutoff"} {
		n, again := uint64(len(gens[id])), 0
		for seq := uint64(1); seq <= n; seq++ {
			g := gens[id][seq]
			switch {
			case len(g) == 0:
				t.Fatalf("%s: run %d never logged (%d numbers logged): lost", id, seq, n)
			case len(g) == 1:
			case len(g) == 2 && id == "cutoff" && g[1] == g[0]+1:
				again++ // cut off as it ended: run again by the next process
			default:
				t.Errorf("%s: run %d logged by generations %v", id, seq, g)
			}
		}
		for _, pid := range pids {
			if byPid[id][pid] == 0 {
				t.Errorf("%s: no run logged by pid %d: %v", id, pid, byPid[id])
			}
		}
		t.Logf("%s: runs 1..%d without a gap, %d run again after a cut-off, by pid %v", id, n, again, byPid[id])
	}
	// 100 ms runs one after the other end at least 100 ms apart; runs that
	// overlap end closer.
	close := 0
	e := ends["drained"]
	for i := 1; i < len(e); i++ {
		if e[i].Sub(e[i-1]) < 80*time.Millisecond {
			close++
		}
	}
	if close < len(e)/2 {
		t.Errorf("drained: %d of %d runs ended within 80 ms of the one before: they did not overlap", close, len(e))
	}
}
