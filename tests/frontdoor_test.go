package tests

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader"
)

// runBin runs bin and returns its output and exit status.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatal(err) // it did not start
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestDemoHelp: baton-demo -h exits 0 and names every endpoint, the
// signals it answers and every flag with its default.
func TestDemoHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		out, errOut, code := runBin(t, demoV1, arg)
		if code != 0 {
			t.Fatalf("baton-demo %s: exit %d\n%s", arg, code, errOut)
		}
		for _, want := range []string{
			"GET    /  ", "POST   /echo", "GET    /kv", "GET    /healthz", "GET    /metrics",
			"GET    /tasks  ", "POST   /tasks", "GET    /tasks/{id}", "DELETE /tasks/{id}", "GET    /events",
			"SIGHUP", "SIGUSR2", "SIGTERM", "SIGINT",
			"-addr address", `(default "127.0.0.1:8080")`, "-drain duration", "(default 30s)",
			"-kv-entries int", "(default 2000)", "-version", "-control path", "-probation duration",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("baton-demo %s does not show %q:\n%s", arg, want, out)
			}
		}
	}
	// A bad flag: exit 1, the error once on stderr, pointing to -h.
	out, errOut, code := runBin(t, demoV1, "-no-such-flag")
	if code != 1 || out != "" || strings.Count(errOut, "no-such-flag") != 1 || !strings.Contains(errOut, "baton-demo -h") {
		t.Errorf("bad flag: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// checkBuildLine checks a one-line build description (state.Build.String)
// names the module, a revision field, this toolchain and the user version.
func checkBuildLine(t *testing.T, what, line, user string) {
	t.Helper()
	for _, want := range []string{"github.com/batonhq/baton@", " rev=", " go=" + runtime.Version(), `user="` + user + `"`} {
		if !strings.Contains(line, want) {
			t.Errorf("%s: %q does not show %q", what, line, want)
		}
	}
}

// TestVersion: baton version and baton-demo -version print the build from
// runtime/debug.ReadBuildInfo and exit 0; -version=STRING still sets the
// version the demo reports; baton status shows the running process's build.
func TestVersion(t *testing.T) {
	out, errOut, code := runBin(t, batonCLI, "version")
	want := "baton test (github.com/batonhq/baton "
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, ", "+runtime.Version()+")\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("baton version: exit %d, %q %q; want %q...%s)", code, out, errOut, want, runtime.Version())
	}
	if _, _, code := runBin(t, batonCLI, "version", "extra"); code != 2 {
		t.Errorf("baton version extra: exit %d, want 2", code)
	}

	out, errOut, code = runBin(t, demoV2, "-version")
	if code != 0 || !strings.HasPrefix(out, "baton-demo ") {
		t.Fatalf("baton-demo -version: exit %d, %q %q", code, out, errOut)
	}
	checkBuildLine(t, "baton-demo -version", out, "v2")
	out, _, _ = runBin(t, demoV2, "-version=v7", "-version")
	checkBuildLine(t, "baton-demo -version=v7 -version", out, "v7")

	// The running process: -version=STRING is what it reports, and baton
	// status shows its build.
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock, "-version=v1.5")
	if got := p.Root(t); got.Version != "v1.5" {
		t.Errorf("GET / reports version %q, want v1.5", got.Version)
	}
	out, _, code = baton(t, nil, "status", "--socket", sock, "--json")
	var st upgrader.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v", code, err)
	}
	if st.Build.User != "v1.5" || st.Build.Module != "github.com/batonhq/baton" || st.Build.GoVersion != runtime.Version() {
		t.Errorf("status build: %+v", st.Build)
	}
	out, _, code = baton(t, nil, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "version     v1.5") ||
		!strings.Contains(out, "build       github.com/batonhq/baton "+st.Build.Version+", "+runtime.Version()) {
		t.Errorf("human status does not show the build: exit %d\n%s", code, out)
	}
}

// TestBindErrorOnce: a demo started on a port that is taken exits 1 and
// says so in one line, naming the address once, the flag that set it and
// what to do.
func TestBindErrorOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for _, args := range [][]string{
		{"-addr", addr},
		{"-addr", "127.0.0.1:0", "-tls-cert", "x.pem", "-tls-key", "x.key", "-tls-addr", addr},
	} {
		out, errOut, code := runBin(t, demoV1, append(args, "-pidfile", filepath.Join(t.TempDir(), "demo.pid"))...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 1 || out != "" || len(lines) != 1 {
			t.Errorf("%v: exit %d, want 1; stdout %q; stderr, %d lines, want 1:\n%s", args, code, out, len(lines), errOut)
			continue
		}
		flagName := args[len(args)-2]
		for _, want := range []string{addr + " is in use", flagName, "baton upgrade"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v: %q does not say %q", args, errOut, want)
			}
		}
		if n := strings.Count(errOut, addr); n != 1 {
			t.Errorf("%v: the address is named %d times: %q", args, n, errOut)
		}
	}
}

// TestRootLengthStable: GET / keeps one length while the hits grow and
// across upgrades (a new pid and generation), so that ab counts no
// "Length" failures; the body stays the JSON object with every field.
func TestRootLengthStable(t *testing.T) {
	p := demotest.Start(t, demoV1, "-kv-entries", "0")
	// A new connection each time: a kept-alive one may reach the draining
	// generation.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (int, demotest.RootReply) {
		t.Helper()
		resp, err := c.Get("http://" + p.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: %v %s", err, resp.Status)
		}
		var r struct {
			demotest.RootReply
			Proto *string `json:"proto"`
			TLS   *bool   `json:"tls"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("GET / is not JSON: %v: %q", err, body)
		}
		if r.Proto == nil || *r.Proto != "HTTP/1.1" || r.TLS == nil || *r.TLS || r.Version != "v1" || r.Pid == 0 {
			t.Fatalf("GET / lacks a field: %q", body)
		}
		return len(body), r.RootReply
	}
	want, first := get()
	for gen := 0; gen <= 2; gen++ {
		if gen > 0 {
			if u := p.Upgrade(t); u.Err != "" {
				t.Fatalf("upgrade: %s", u.Err)
			}
		}
		// 12 replies from this generation (hits from 1 digit to 2); a new
		// connection may still reach the old one for a moment, and its
		// replies are measured too.
		seen := 0
		for i := 0; seen < 12; i++ {
			n, r := get()
			if n != want {
				t.Fatalf("generation %d, hits %d, pid %d: %d bytes, the first reply (hits %d, pid %d) had %d",
					r.Generation, r.Hits, r.Pid, n, first.Hits, first.Pid, want)
			}
			if r.Generation == gen {
				seen++
			} else if i > 1000 {
				t.Fatalf("generation %d still answers after upgrade %d", r.Generation, gen)
			}
		}
	}
}
