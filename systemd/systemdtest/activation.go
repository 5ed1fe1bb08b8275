//go:build linux

package systemdtest

import (
	"os"
	"os/exec"
	"strings"
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
