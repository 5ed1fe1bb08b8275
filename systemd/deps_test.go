package systemd_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependsOnProtocolOnly holds the package to its contract: the protocol
// on the standard library and golang.org/x/sys, nothing of baton's upgrader
// (that integration is package sdupgrade) and nothing it pulls in.
func TestDependsOnProtocolOnly(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/batonhq/baton/systemd" && !strings.HasPrefix(p, "golang.org/x/sys/") {
			t.Errorf("systemd depends on %s; only the standard library and golang.org/x/sys are allowed", p)
		}
	}
}
