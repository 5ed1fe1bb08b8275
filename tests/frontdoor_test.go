package tests

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// runBin runs bin and returns its output and exit status.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
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
