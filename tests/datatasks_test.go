package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// dataTask is GET /tasks/{id}'s answer.
type dataTask struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Status   string    `json:"status"`
	Runs     uint64    `json:"runs"`
	LastSeq  uint64    `json:"last_seq"`
	Failures uint64    `json:"failures"`
	NextRun  time.Time `json:"next_run"`
	Error    string    `json:"error"`
	Reason   string    `json:"reason"`
	InFlight int       `json:"in_flight"`
}

var dataClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// taskCall sends one request about tasks and decodes the answer.
func taskCall(t testing.TB, method, url string, body any) (int, dataTask) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := dataClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var d dataTask
	if resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatalf("%s %s: %d, body: %v", method, url, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, d
}

// TestDataTaskAPI: POST /tasks answers 201, 409 for a duplicate, 400 with
// the reason for a bad schedule, an unknown kind or a bad time zone;
// DELETE answers 204 and the task is gone, here and after an upgrade.
func TestDataTaskAPI(t *testing.T) {
	p := demotest.Start(t, demoV1)
	for _, c := range []struct {
		body map[string]any
		code int
	}{
		{map[string]any{"id": "cust-1", "kind": "demo.count", "every": "1s"}, http.StatusCreated},
		{map[string]any{"id": "cust-2", "kind": "demo.count", "cron": "*/5 * * * * *", "tz": "Europe/Paris"}, http.StatusCreated},
		{map[string]any{"id": "cust-1", "kind": "demo.count", "every": "2s"}, http.StatusConflict},
		{map[string]any{"id": "cust-3", "kind": "demo.count", "cron": "*/5 * *"}, http.StatusBadRequest},
		{map[string]any{"id": "cust-4", "kind": "demo.nope", "every": "1s"}, http.StatusBadRequest},
		{map[string]any{"id": "cust-5", "kind": "demo.count", "cron": "* * * * *", "tz": "Europe/Atlantis"}, http.StatusBadRequest},
		{map[string]any{"id": "cust-6", "kind": "demo.count", "every": "soon"}, http.StatusBadRequest},
		{map[string]any{"id": "cust-7", "kind": "demo.count"}, http.StatusBadRequest},
	} {
		code, d := taskCall(t, "POST", p.URL+"/tasks", c.body)
		if code != c.code || (code >= 400) != (d.Error != "") {
			t.Errorf("POST %v: %d %+v, want %d", c.body, code, d, c.code)
		}
	}
	code, d := taskCall(t, "GET", p.URL+"/tasks/cust-2", nil)
	if code != http.StatusOK || d.ID != "cust-2" || d.Kind != "demo.count" || d.NextRun.IsZero() || d.NextRun.Second()%5 != 0 {
		t.Errorf("GET cust-2: %d %+v", code, d)
	}
	if code, _ := taskCall(t, "DELETE", p.URL+"/tasks/cust-2", nil); code != http.StatusNoContent {
		t.Errorf("DELETE: %d", code)
	}
	if code, _ := taskCall(t, "DELETE", p.URL+"/tasks/cust-2", nil); code != http.StatusNotFound {
		t.Errorf("second DELETE: %d", code)
	}
	nextGeneration(t, p, 0, nil)
	if code, _ := taskCall(t, "GET", p.URL+"/tasks/cust-2", nil); code != http.StatusNotFound {
		t.Errorf("the deleted task is back after an upgrade: %d", code)
	}
	if code, d := taskCall(t, "GET", p.URL+"/tasks/cust-1", nil); code != http.StatusOK || d.Status == "orphaned" {
		t.Errorf("cust-1 after an upgrade: %d %+v", code, d)
	}
}

// dataTaskMix returns n task bodies: interval tasks, cron tasks in three
// zones (one third with fixed hours, which follow the wall clock) and
// one-off tasks due over the first 8 s.
func dataTaskMix(n int, now time.Time) []map[string]any {
	zones := []string{"Europe/Paris", "America/New_York", "Asia/Tokyo"}
	var out []map[string]any
	for i := range n {
		id := fmt.Sprintf("cust-%05d", i)
		switch i % 5 {
		case 0, 1:
			out = append(out, map[string]any{"id": id, "kind": "demo.count", "every": "1s", "jitter": "200ms"})
		case 2, 3:
			zone := zones[i%3]
			expr := "*/2 * * * * *"
			if i%3 == 0 {
				loc, _ := time.LoadLocation(zone)
				h := now.In(loc).Hour()
				expr = fmt.Sprintf("*/2 * %d,%d * * *", h, (h+1)%24)
			}
			out = append(out, map[string]any{"id": id, "kind": "demo.count", "cron": expr, "tz": zone})
		case 4:
			out = append(out, map[string]any{"id": id, "kind": "demo.count", "after": (time.Duration(i%80) * 100 * time.Millisecond).String()})
		}
	}
	return out
}

// postAll creates the tasks, eight requests at a time.
func postAll(t *testing.T, url string, bodies []map[string]any) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, len(bodies))
	ch := make(chan map[string]any)
	for range 8 {
		wg.Go(func() {
			for b := range ch {
				if code, d := taskCall(t, "POST", url+"/tasks", b); code != http.StatusCreated {
					errs <- fmt.Sprintf("POST %v: %d %s", b, code, d.Error)
				}
			}
		})
	}
	for _, b := range bodies {
		ch <- b
	}
	close(ch)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestDataTasksSurviveUpgradesAndRestart: 5,000 tasks created over HTTP
// at run time (interval, cron in three time zones, one-off) go through 20
// upgrades under load, then a full stop and start with the state file,
// with no binary registering them. Every task is there at the end; every
// task's runs, read from the log all processes write, are numbered 1, 2,
// 3... without a gap or a repeat; each one-off task ran exactly once and
// is gone; the tasks deleted half-way never come back.
func TestDataTasksSurviveUpgradesAndRestart(t *testing.T) {
	const (
		n        = 5000
		upgrades = 20
	)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	stateFile := filepath.Join(dir, "demo.state")
	args := []string{"-task-log", logPath, "-state-file", stateFile}
	p := demotest.StartEnv(t, nil, demoV1, dir, args...)
	bodies := dataTaskMix(n, time.Now())
	postAll(t, p.URL, bodies)

	deleted := map[string]bool{}
	deletedAt := map[string]int{} // the upgrade after which it was deleted
	pidsAfter := map[int]int{}    // pid -> the upgrade that started it
	// While the upgrades go on, tasks come and go: each one the service
	// answered 201 for must be there at the end, unless it answered 204
	// to its DELETE; 503 (frozen for a handoff) is allowed.
	churn := struct {
		sync.Mutex
		created, deleted map[string]bool
	}{created: map[string]bool{}, deleted: map[string]bool{}}
	stopChurn, churned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(churned)
		for i := 0; ; i++ {
			select {
			case <-stopChurn:
				return
			case <-time.After(10 * time.Millisecond):
			}
			id := fmt.Sprintf("late-%05d", i)
			code, _ := taskCall(t, "POST", p.URL+"/tasks", map[string]any{"id": id, "kind": "demo.count", "every": "500ms"})
			churn.Lock()
			churn.created[id] = code == http.StatusCreated
			churn.Unlock()
			if code == http.StatusCreated && i%2 == 1 {
				code, _ := taskCall(t, "DELETE", p.URL+"/tasks/"+id, nil)
				churn.Lock()
				churn.deleted[id] = code == http.StatusNoContent
				churn.Unlock()
			}
		}
	}()
	r := underLoad(t, standardLoad(p.URL), func() {
		defer func() { close(stopChurn); <-churned }()
		for i := range upgrades {
			u := nextGeneration(t, p, i, nil)
			pidsAfter[u.NewPid] = i
			if i == upgrades/2 {
				for j := 0; j < n; j += 25 { // interval and cron tasks, one in 25
					id := bodies[j]["id"].(string)
					if code, _ := taskCall(t, "DELETE", p.URL+"/tasks/"+id, nil); code != http.StatusNoContent {
						t.Fatalf("DELETE %s: %d", id, code)
					}
					deleted[id], deletedAt[id] = true, i
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	assertNoFailures(t, r)
	stopAndWait(t, p)

	// A full restart: a new process with no parent, from the state file.
	q := demotest.StartEnv(t, nil, demoV1, dir, args...)
	restarted := q.Pid(t)
	pidsAfter[restarted] = upgrades
	time.Sleep(3 * time.Second)
	final := map[string]dataTask{}
	for _, b := range bodies {
		id := b["id"].(string)
		code, d := taskCall(t, "GET", q.URL+"/tasks/"+id, nil)
		switch {
		case code == http.StatusOK:
			final[id] = d
		case code != http.StatusNotFound:
			t.Fatalf("GET %s: %d", id, code)
		}
	}
	lateGone, lateLost, lateBack := 0, 0, 0
	for id, created := range churn.created {
		if !created {
			continue
		}
		code, _ := taskCall(t, "GET", q.URL+"/tasks/"+id, nil)
		switch {
		case churn.deleted[id] && code != http.StatusNotFound:
			lateBack++
			t.Errorf("task %s, deleted during the upgrades, is back (%d)", id, code)
		case churn.deleted[id]:
			lateGone++
		case code != http.StatusOK:
			lateLost++
			t.Errorf("task %s, created during the upgrades (201), is lost (%d)", id, code)
		}
	}
	stopAndWait(t, q)
	t.Logf("%d tasks created during the upgrades, %d of them deleted; %d lost, %d back", len(churn.created), lateGone, lateLost, lateBack)

	runs := readTaskLog(t, logPath)
	var oneOffs, live, total int
	for _, b := range bodies {
		id := b["id"].(string)
		rs := runs[id]
		total += len(rs)
		for i, run := range rs {
			if run.seq != uint64(i+1) {
				t.Fatalf("task %s: run %d has seq %d (pid %d): runs lost or repeated", id, i+1, run.seq, run.pid)
			}
		}
		_, oneOff := b["after"]
		switch {
		case oneOff:
			oneOffs++
			if len(rs) != 1 {
				t.Errorf("one-off task %s ran %d times, want once", id, len(rs))
			}
			if _, ok := final[id]; ok {
				t.Errorf("one-off task %s still registered after its run", id)
			}
		case deleted[id]:
			if _, ok := final[id]; ok {
				t.Errorf("deleted task %s is back", id)
			}
			for _, run := range rs {
				if g, ok := pidsAfter[run.pid]; ok && g > deletedAt[id] {
					t.Errorf("deleted task %s ran in a later generation (pid %d)", id, run.pid)
				}
			}
		default:
			live++
			d, ok := final[id]
			if !ok {
				t.Errorf("task %s is missing after the restart", id)
				continue
			}
			// Runs go on between the GET and the stop: the log has
			// the last word.
			if d.Failures != 0 || d.LastSeq > uint64(len(rs)) || len(rs) < 5 {
				t.Errorf("task %s: %+v, %d runs in the log", id, d, len(rs))
			}
			if last := rs[len(rs)-1]; last.pid != restarted {
				t.Errorf("task %s did not run after the restart: last run in pid %d", id, last.pid)
			}
		}
	}
	if live+oneOffs+len(deleted) != n || len(deleted) == 0 {
		t.Fatalf("%d live, %d one-off, %d deleted of %d", live, oneOffs, len(deleted), n)
	}
	t.Logf("%d tasks (%d one-off, %d deleted), %d runs over %d upgrades and a restart", n, oneOffs, len(deleted), total, upgrades)
}

// buildWithout builds baton-demo without a kind, as a release that lacks
// it.
func buildWithout(t *testing.T, kind string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "baton-demo-without")
	cmd := exec.Command(demotest.GoTool(), "build", "-o", out,
		"-ldflags", "-X main.version=v1-without -X main.kvSchema=1 -X main.withoutKinds="+kind, "./cmd/baton-demo")
	cmd.Dir = demotest.Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestDataTaskOrphanRoundTrip: v1 runs a task of kind demo.count; two
// releases without the kind keep it (listed as orphaned, never run, its
// runs unchanged) while the other kind's tasks run on; v1 again runs it
// on with its state and numbering.
func TestDataTaskOrphanRoundTrip(t *testing.T) {
	without := buildWithout(t, "demo.count")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-task-log", logPath)
	for _, b := range []map[string]any{
		{"id": "k-1", "kind": "demo.count", "every": "100ms"},
		{"id": "e-1", "kind": "demo.echo", "every": "100ms"},
	} {
		if code, d := taskCall(t, "POST", p.URL+"/tasks", b); code != http.StatusCreated {
			t.Fatalf("POST %v: %d %+v", b, code, d)
		}
	}
	time.Sleep(500 * time.Millisecond)
	upgradertest.Install(t, without, p.Bin)
	u1 := nextGeneration(t, p, 0, nil)
	_, before := taskCall(t, "GET", p.URL+"/tasks/k-1", nil)
	if before.Status != "orphaned" || before.Runs == 0 || before.Reason == "" {
		t.Fatalf("k-1 in a release without its kind: %+v", before)
	}
	time.Sleep(500 * time.Millisecond)
	u2 := nextGeneration(t, p, 1, nil) // a second generation without the kind
	time.Sleep(500 * time.Millisecond)
	if _, d := taskCall(t, "GET", p.URL+"/tasks/k-1", nil); d.Status != "orphaned" || d.Runs != before.Runs {
		t.Fatalf("k-1 two generations without its kind: %+v, was %+v", d, before)
	}
	upgradertest.Install(t, demoV1, p.Bin)
	u3 := nextGeneration(t, p, 2, nil)
	time.Sleep(700 * time.Millisecond)
	_, after := taskCall(t, "GET", p.URL+"/tasks/k-1", nil)
	if after.Status == "orphaned" || after.Failures != 0 || after.Runs < before.Runs+3 {
		t.Fatalf("k-1 back with its kind: %+v, was %+v", after, before)
	}
	stopAndWait(t, p)
	runs := readTaskLog(t, logPath)
	for i, run := range runs["k-1"] {
		if run.seq != uint64(i+1) {
			t.Fatalf("k-1: run %d has seq %d", i+1, run.seq)
		}
		if run.pid == u1.NewPid || run.pid == u2.NewPid {
			t.Fatalf("k-1 ran in pid %d, a release without its kind", run.pid)
		}
	}
	inWithout := 0
	for _, run := range runs["e-1"] {
		if run.pid == u1.NewPid || run.pid == u2.NewPid {
			inWithout++
		}
	}
	if inWithout == 0 {
		t.Error("e-1 did not run in the releases without demo.count")
	}
	if last := runs["k-1"][len(runs["k-1"])-1]; last.pid != u3.NewPid {
		t.Errorf("k-1's last run in pid %d, want v1 again (%d)", last.pid, u3.NewPid)
	}
}
