package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// cliTasks is `baton tasks --json`'s answer.
type cliTasks struct {
	Tasks []struct {
		ID       string    `json:"id"`
		Kind     string    `json:"kind"`
		Status   string    `json:"status"`
		Runs     uint64    `json:"runs"`
		Schedule string    `json:"schedule"`
		Next     time.Time `json:"next"`
	} `json:"tasks"`
	Orphans []struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	} `json:"orphans"`
}

func batonTasks(t *testing.T, args ...string) cliTasks {
	t.Helper()
	out, errOut, code := baton(t, nil, append([]string{"tasks", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("baton tasks %v: exit %d: %s", args, code, errOut)
	}
	var r cliTasks
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("baton tasks --json: %v: %q", err, out)
	}
	return r
}

// TestCLITasks: baton tasks lists the tasks created at run time with
// their schedules, filters them, pauses one (which stays paused across an
// upgrade), runs it now while paused, resumes it; an unknown ID exits 1;
// another user is refused as for upgrade; the orphans of a release
// without their kind are listed as such.
func TestCLITasks(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock, "-tasks", "3")
	for _, b := range []map[string]any{
		{"id": "cust-1", "kind": "demo.count", "every": "100ms"},
		{"id": "cust-2", "kind": "demo.echo", "cron": "*/2 * * * * *", "tz": "America/New_York"},
	} {
		if code, d := taskCall(t, "POST", p.URL+"/tasks", b); code != http.StatusCreated {
			t.Fatalf("POST: %d %+v", code, d)
		}
	}
	all := batonTasks(t, "--socket", sock)
	if len(all.Tasks) != 5 {
		t.Fatalf("baton tasks: %+v, want 5 tasks", all)
	}
	if r := batonTasks(t, "--socket", sock, "--kind", "demo.echo"); len(r.Tasks) != 1 || r.Tasks[0].Schedule != "cron */2 * * * * * America/New_York" {
		t.Errorf("--kind demo.echo: %+v", r)
	}
	out, errOut, code := baton(t, nil, "tasks", "--socket", sock)
	if code != 0 || !strings.Contains(out, "NEXT RUN") || !strings.Contains(out, "cust-2") {
		t.Errorf("table: exit %d %q %q", code, out, errOut)
	}
	if _, errOut, code := baton(t, nil, "tasks", "pause", "--socket", sock, "cust-1"); code != 0 {
		t.Fatalf("pause: exit %d %s", code, errOut)
	}
	_, paused := taskCall(t, "GET", p.URL+"/tasks/cust-1", nil)
	nextGeneration(t, p, 0, nil)
	time.Sleep(300 * time.Millisecond)
	if r := batonTasks(t, "--socket", sock, "--state", "paused"); len(r.Tasks) != 1 || r.Tasks[0].ID != "cust-1" || r.Tasks[0].Runs != paused.Runs {
		t.Fatalf("after an upgrade, --state paused: %+v; runs when paused %d", r, paused.Runs)
	}
	if _, errOut, code := baton(t, nil, "tasks", "run-now", "--socket", sock, "cust-1"); code != 0 {
		t.Fatalf("run-now: exit %d %s", code, errOut)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, d := taskCall(t, "GET", p.URL+"/tasks/cust-1", nil); d.Runs != paused.Runs+1; _, d = taskCall(t, "GET", p.URL+"/tasks/cust-1", nil) {
		if time.Now().After(deadline) || d.Runs > paused.Runs+1 {
			t.Fatalf("run-now on a paused task: %d runs, want %d", d.Runs, paused.Runs+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, errOut, code := baton(t, nil, "tasks", "resume", "--socket", sock, "cust-1"); code != 0 {
		t.Fatalf("resume: exit %d %s", code, errOut)
	}
	time.Sleep(400 * time.Millisecond)
	if _, d := taskCall(t, "GET", p.URL+"/tasks/cust-1", nil); d.Status == "paused" || d.Runs < paused.Runs+3 {
		t.Errorf("resumed: %+v", d)
	}
	if _, errOut, code := baton(t, nil, "tasks", "pause", "--socket", sock, "nope"); code != 1 || !strings.Contains(errOut, "no such task") {
		t.Errorf("pause nope: exit %d %q", code, errOut)
	}
	if _, _, code := baton(t, nil, "tasks", "pause", "--socket", sock); code != 2 {
		t.Errorf("pause without an ID: exit %d, want 2", code)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if _, errOut, code := baton(t, nobody, "tasks", "pause", "--socket", sock, "cust-2"); code != 3 || !strings.Contains(errOut, "may not control this service") {
		t.Errorf("nobody: exit %d %q", code, errOut)
	}
	if _, d := taskCall(t, "GET", p.URL+"/tasks/cust-2", nil); d.Status == "paused" {
		t.Error("another user paused a task")
	}

	upgradertest.Install(t, buildWithout(t, "demo.echo"), p.Bin)
	nextGeneration(t, p, 1, nil)
	r := batonTasks(t, "--socket", sock, "--orphans")
	if len(r.Tasks) != 0 || len(r.Orphans) != 1 || r.Orphans[0].ID != "cust-2" || r.Orphans[0].Kind != "demo.echo" {
		t.Errorf("--orphans in a release without demo.echo: %+v", r)
	}
	if out, _, _ := baton(t, nil, "tasks", "--socket", sock); !strings.Contains(out, "orphaned") {
		t.Errorf("the table does not show the orphan: %q", out)
	}
}
