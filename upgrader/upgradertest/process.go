package upgradertest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Procs remembers the processes a test saw, each by a pidfd opened when it
// was seen, so that the test can kill those still alive at its end without
// signalling a pid that was reused meanwhile: a generation that exited
// minutes before may name another program by then, as pids wrap quickly
// on a busy machine (32768 here); its pidfd never does. The zero value is
// ready; it is safe for concurrent use.
type Procs struct {
	mu sync.Mutex
	m  map[int]*pidfd.Process // nil: gone when seen
}

// Saw records pid, which a pid file or a log line names now.
func (p *Procs) Saw(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[pid]; ok {
		return
	}
	if p.m == nil {
		p.m = make(map[int]*pidfd.Process)
	}
	for q, proc := range p.m {
		if proc != nil && proc.Exited() { // a thousand upgrades hold no thousand fds
			proc.Close()
			p.m[q] = nil
		}
	}
	proc, err := pidfd.Open(pid)
	if err != nil {
		proc = nil // gone already: nothing to stop
	}
	p.m[pid] = proc
}

// KillAll sends SIGKILL to every process seen that is still alive and
// forgets them.
func (p *Procs) KillAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, proc := range p.m {
		if proc != nil {
			proc.Signal(syscall.SIGKILL)
			proc.Close()
		}
	}
	clear(p.m)
}
