//go:build linux

package systemdtest

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ListenPIDSelf, as the value of LISTEN_PID in ActivationCommand's env,
// stands for the pid of the started process.
const ListenPIDSelf = "self"

// ActivationCommand returns a command that runs exe (with args) as systemd
// runs a socket-activated service: files become its fds 3, 4, … and env is
// added to an environment from which every LISTEN_* variable of this process
// was removed. env carries the test's LISTEN_FDS, LISTEN_FDNAMES and
// LISTEN_PID, possibly malformed; LISTEN_PID=self (ListenPIDSelf) becomes the
// pid of the started process, set as systemd sets it, between fork and exec:
// /bin/sh sets it and then execs exe in its own place.
func ActivationCommand(files []*os.File, env []string, exe string, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c",
		`if [ "$LISTEN_PID" = ` + ListenPIDSelf + ` ]; then LISTEN_PID=$$; export LISTEN_PID; fi; exec "$0" "$@"`,
		exe}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	return cmd
}

// RunActivated runs ActivationCommand(files, env, exe, args...) to its end
// and returns what it wrote to stdout. The test fails, with the process's
// stderr, if it does not exit 0; WaitDelay bounds a process that leaves a
// child holding its output.
func RunActivated(t testing.TB, files []*os.File, env []string, exe string, args ...string) []byte {
	t.Helper()
	cmd := ActivationCommand(files, env, exe, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", exe, err, stderr.String())
	}
	return out
}

// Listen returns a TCP listener on a free port of 127.0.0.1, closed when the
// test ends: a socket to pass to an activated process.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ListenerFile returns a duplicate of the descriptor of ln, a
// *net.TCPListener, for ActivationCommand's files; ln stays usable. The
// duplicate is closed when the test ends.
func ListenerFile(t testing.TB, ln net.Listener) *os.File {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
