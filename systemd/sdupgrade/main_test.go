//go:build linux

package sdupgrade_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/batonhq/baton/internal/procfd"
	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/sdupgrade"
	"github.com/batonhq/baton/systemd/systemdtest"
)

// The test binary doubles as the socket-activated service, as os/exec's
// tests do: TestMain dispatches on helperEnv before any test runs.
const helperEnv = "BATON_SDUPGRADE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "attach":
		os.Exit(attachMain())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(3)
	}
}

// attachReport is what the helper process adopted, as JSON on stdout.
type attachReport struct {
	Err   string
	Files []adopted
	Env   map[string]string // LISTEN_* left after Attach
}

// adopted is one listener the integration offered to AdoptListener.
type adopted struct {
	Name string
	Ino  uint64
	Addr string
}

// attachMain is the helper process of TestAttachAdoptsActivatedSockets: it
// attaches to a fake host first thing and reports what was adopted.
func attachMain() int {
	var rep attachReport
	h := &fakeHost{}
	i, err := sdupgrade.AttachHost(h, sdupgrade.AttachOptions{Notifier: &systemd.Notifier{}})
	if err != nil {
		rep.Err = err.Error()
	} else {
		defer i.Close()
	}
	for _, a := range h.adoption {
		ino, _ := procfd.Inode(a.ln.(*net.TCPListener))
		rep.Files = append(rep.Files, adopted{Name: a.name, Ino: ino, Addr: a.ln.Addr().String()})
	}
	rep.Env = map[string]string{}
	for _, k := range []string{systemd.EnvListenPID, systemd.EnvListenFDs, systemd.EnvListenFDNames} {
		if v, ok := os.LookupEnv(k); ok {
			rep.Env[k] = v
		}
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// startHelper runs the test binary as a socket-activated service with files
// as fds 3… and env (see systemdtest.ActivationCommand).
func startHelper(t *testing.T, files []*os.File, env ...string) attachReport {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := systemdtest.RunActivated(t, files, append([]string{helperEnv + "=attach"}, env...), exe)
	var rep attachReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("helper report %q: %v", out, err)
	}
	return rep
}
