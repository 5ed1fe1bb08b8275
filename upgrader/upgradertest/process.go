package upgradertest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
)

// CleanEnv is the test's environment without the variables through which
// a service manager talks to its service (NOTIFY_SOCKET, LISTEN_PID,
// LISTEN_FDS, LISTEN_FDNAMES, WATCHDOG_PID, WATCHDOG_USEC, FDSTORE). Start
// gives a service this environment and Options.Env.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC", "FDSTORE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Install copies src to dst as an executable, atomically: it writes a
// temporary file beside dst and renames it over, as a deploy tool does.
func Install(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	InstallBytes(t, b, dst, 0o755)
}

// InstallBytes writes b to dst with mode, atomically: a test installs a
// broken binary (a script that exits, a file that is not executable) this
// way.
func InstallBytes(t testing.TB, b []byte, dst string, mode os.FileMode) {
	t.Helper()
	tmp := dst + ".new"
	// While the file is open for writing, a fork in another goroutine
	// gives its child a copy of the descriptor until that child execs, and
	// an exec of the file then fails with ETXTBSY ("text file busy",
	// golang/go#22315; seen in a full run). ForkLock keeps forks out of
	// that window.
	syscall.ForkLock.RLock()
	err := os.WriteFile(tmp, b, mode)
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes the umask; the rename must not.
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// WaitExit waits until pid has exited, up to timeout, without being its
// parent: it waits on a pidfd, which becomes readable when the process
// ends. A pid that no longer exists has exited.
func WaitExit(pid int, timeout time.Duration) error {
	return pidfd.Wait(pid, timeout)
}

// Alive reports whether pid exists and is not a zombie: an exited child
// of the service that its parent has not reaped yet is not alive.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	st := string(b)
	i := strings.LastIndexByte(st, ')')
	return i > 0 && i+2 < len(st) && st[i+2] != 'Z'
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
