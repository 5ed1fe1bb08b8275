package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// baton runs the baton command and returns its output and exit status.
func baton(t *testing.T, cred *syscall.Credential, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(batonCLI, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// controlDir returns a directory that another user can traverse, for a
// control socket that test may try.
func controlDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "baton-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCLIUpgradeAndStatus(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock)

	// 20 upgrades through the socket: it is handed over every time.
	for i := 0; i < 20; i++ {
		out, errOut, code := baton(t, nil, "upgrade", "--socket", sock, "--wait")
		if code != 0 {
			t.Fatalf("upgrade %d: exit %d\n%s%s", i, code, out, errOut)
		}
		for _, step := range []string{"new process started", "state sent", "new process ready", "old process drained", "upgraded: pid"} {
			if !strings.Contains(out, step) {
				t.Fatalf("upgrade %d: output does not show %q:\n%s", i, step, out)
			}
		}
	}
	if got := p.Root(t); got.Generation != 20 {
		t.Fatalf("generation %d after 20 upgrades", got.Generation)
	}

	// --json: one object per line, ending with the result.
	out, _, code := baton(t, nil, "upgrade", "--socket", sock, "--wait", "--json")
	if code != 0 {
		t.Fatalf("upgrade --json: exit %d", code)
	}
	var last upgrader.ControlReply
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("--json line %q: %v", sc.Text(), err)
		}
	}
	if last.Type != "result" || last.Result == nil || last.Result.Generation != 21 {
		t.Fatalf("last --json line: %+v", last)
	}

	// A failed upgrade: exit 1 and the reason on stderr; still serving.
	upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 3\n"), p.Bin, 0o755)
	out, errOut, code := baton(t, nil, "upgrade", "--socket", sock, "--wait")
	if code != 1 || !strings.Contains(errOut, "exit status 3") {
		t.Fatalf("failed upgrade: exit %d, stderr %q, stdout %q", code, errOut, out)
	}

	out, _, code = baton(t, nil, "status", "--socket", sock, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	var st upgrader.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Generation != 21 || st.Pid != p.Pid(t) || st.Build.User != "v1" {
		t.Errorf("status: generation %d pid %d version %q", st.Generation, st.Pid, st.Build.User)
	}
	if n := len(st.History); n != 20 {
		t.Errorf("history holds %d upgrades, want the last 20", n)
	}
	if h := st.History[len(st.History)-1]; h.Result != "failure" || h.Step != "start" && h.Step != "hello" {
		t.Errorf("last upgrade in the history: %+v", h)
	}
	if h := st.History[len(st.History)-2]; h.Result != "success" || h.ToPid != st.Pid {
		t.Errorf("the upgrade before it: %+v", h)
	}
	out, _, code = baton(t, nil, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "generation  21") || !strings.Contains(out, "failure") {
		t.Errorf("human status: exit %d\n%s", code, out)
	}

	// Usage errors and an unreachable service.
	if _, _, code := baton(t, nil, "upgrade"); code != 2 {
		t.Errorf("upgrade without a target: exit %d, want 2", code)
	}
	if _, _, code := baton(t, nil, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if _, errOut, code := baton(t, nil, "status", "--socket", filepath.Join(dir, "nothing.sock")); code != 3 || !strings.Contains(errOut, "cannot reach") {
		t.Errorf("unreachable: exit %d, %q", code, errOut)
	}
	if out, _, code := baton(t, nil, "upgrade", "--help"); code != 0 {
		t.Errorf("--help: exit %d %q", code, out)
	}
}

func TestCLIRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the client as another user")
	}
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}

	// The socket's mode keeps other users out...
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v %v", fi.Mode(), err)
	}
	if _, errOut, code := baton(t, nil, "status", "--socket", sock); code != 0 {
		t.Fatalf("root: exit %d %s", code, errOut)
	}
	if _, errOut, code := baton(t, nobody, "status", "--socket", sock); code != 3 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("nobody through mode 0600: exit %d, %q", code, errOut)
	}
	// ...and SO_PEERCRED refuses them even where the mode would not.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	mark := p.Logs.Len()
	_, errOut, code := baton(t, nobody, "upgrade", "--socket", sock, "--wait")
	if code != 3 || !strings.Contains(errOut, "uid 65534 may not control this service") {
		t.Fatalf("nobody through SO_PEERCRED: exit %d, %q", code, errOut)
	}
	if _, err := p.Logs.WaitFrom(mark, 5*time.Second, upgradertest.Match{Msg: "control: refused a client of another user"}); err != nil {
		t.Error(err)
	}
	if got := p.Root(t); got.Generation != 0 {
		t.Errorf("a refused client upgraded the service to generation %d", got.Generation)
	}
}

func TestMetricsCarryOver(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock, "-tasks", "100", "-task-interval", "10ms")
	var runs []float64
	scrapeRuns := func() {
		v, err := strconv.ParseFloat(scrape(t, p.URL)["baton_worker_runs_total"], 64)
		if err != nil {
			t.Fatalf("baton_worker_runs_total: %v", err)
		}
		runs = append(runs, v)
	}
	for i := 0; i < 10; i++ {
		scrapeRuns()
		if _, errOut, code := baton(t, nil, "upgrade", "--socket", sock, "--wait"); code != 0 {
			t.Fatalf("upgrade %d: %s", i, errOut)
		}
		scrapeRuns()
	}
	for i := 1; i < len(runs); i++ {
		if runs[i] < runs[i-1] {
			t.Fatalf("baton_worker_runs_total went down across an upgrade: %v", runs)
		}
	}
	if runs[len(runs)-1] == runs[0] {
		t.Fatalf("baton_worker_runs_total never moved: %v", runs)
	}
	m := scrape(t, p.URL)
	if got := m[`baton_upgrades_total{result="success"}`]; got != "10" {
		t.Errorf(`baton_upgrades_total{result="success"} = %q from the newest process, want 10`, got)
	}
	if got := m["baton_generation"]; got != "10" {
		t.Errorf("baton_generation = %q, want 10", got)
	}
}

// scrape reads /metrics into a map from series to value.
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			m[line[:i]] = line[i+1:]
		}
	}
	return m
}

// TestSwitchAndDrainObservedByNewProcess: after an upgrade the process
// that is scraped, the new one, has the upgrade's switch time and the old
// process's drain in its histograms (before, the old process observed
// them and nobody scraped it: the dashboard's panels stayed empty).
func TestSwitchAndDrainObservedByNewProcess(t *testing.T) {
	p := demotest.Start(t, demoV1, "-tasks", "10")
	for i := range 2 {
		u := nextGeneration(t, p, i, nil)
		var m map[string]string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			m = scrape(t, p.URL)
			if m["baton_generation"] == strconv.Itoa(i+1) && m["baton_drain_duration_seconds_count"] == "1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("upgrade %d (pid %d): generation %q, drain count %q, want %d and 1", i, u.NewPid,
					m["baton_generation"], m["baton_drain_duration_seconds_count"], i+1)
			}
		}
		if got := m["baton_upgrade_duration_seconds_count"]; got != "1" {
			t.Errorf("upgrade %d: baton_upgrade_duration_seconds_count = %q on the new process, want 1", i, got)
		}
		for _, name := range []string{"baton_upgrade_duration_seconds_sum", "baton_drain_duration_seconds_sum"} {
			if v, err := strconv.ParseFloat(m[name], 64); err != nil || v <= 0 || v > 30 {
				t.Errorf("upgrade %d: %s = %q", i, name, m[name])
			}
		}
	}
}
