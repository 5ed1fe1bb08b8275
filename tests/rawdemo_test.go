package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// rawDemo is one baton-demo process started directly, for the tests that
// need what demotest.Proc does not give: its exit status, a start that
// fails, or another user to run it as. It never upgrades: the tests that use
// it stop or refuse it.
type rawDemo struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's error, set before exited is closed
	logged chan struct{} // closed once the log pipe ended

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
	logDone bool
	// procs are the pids that logged, to kill them at the end.
	procs upgradertest.Procs
}

// startRawDemo starts bin in dir with exactly args, as cred if not nil. The
// process and the generations it started are killed, through pidfds, when
// the test ends.
func startRawDemo(t *testing.T, cred *syscall.Credential, bin, dir string, args ...string) *rawDemo {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &rawDemo{cmd: exec.Command(bin, args...), exited: make(chan struct{}), changed: make(chan struct{})}
	d.cmd.Dir = dir
	d.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if cred != nil {
		d.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	logged := make(chan struct{})
	d.logged = logged
	go func() {
		defer close(logged)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			if m := pidRE.FindStringSubmatch(sc.Text()); m != nil {
				if pid, err := strconv.Atoi(m[1]); err == nil {
					d.procs.Saw(pid)
				}
			}
			d.lines = append(d.lines, sc.Text())
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
		d.mu.Lock()
		d.logDone = true
		close(d.changed)
		d.mu.Unlock()
	}()
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		// A generation it started, by an upgrade the test expected to
		// be refused, holds the log pipe too.
		d.procs.KillAll()
		d.cmd.Process.Kill()
		<-d.exited
		select {
		case <-logged:
		case <-time.After(10 * time.Second):
			t.Errorf("log pipe of baton-demo still open 10 s after it was killed: a process it started lives on")
		}
	})
	return d
}

// waitLog waits for a line that contains every one of subs and returns it.
func (d *rawDemo) waitLog(timeout time.Duration, subs ...string) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for from := 0; ; {
		d.mu.Lock()
		for ; from < len(d.lines); from++ {
			if containsAll(d.lines[from], subs) {
				line := d.lines[from]
				d.mu.Unlock()
				return line, nil
			}
		}
		changed, done := d.changed, d.logDone
		d.mu.Unlock()
		if done {
			return "", fmt.Errorf("log ended without a line with %q:\n%s", subs, d.log())
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", fmt.Errorf("no line with %q after %v:\n%s", subs, timeout, d.log())
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

var (
	addrRE = regexp.MustCompile(`addr=(\S+)`)
	pidRE  = regexp.MustCompile(` pid=(\d+)`)
)

// serving waits for the "serving" line and returns the HTTP address.
func (d *rawDemo) serving(t *testing.T) string {
	t.Helper()
	line, err := d.waitLog(10*time.Second, "msg=serving")
	if err != nil {
		t.Fatalf("baton-demo did not start: %v", err)
	}
	m := addrRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no addr in %q", line)
	}
	return m[1]
}

// exitCode waits for the process to exit, and for the rest of its log,
// and returns its exit status; ok is false if it was still running after
// timeout.
func (d *rawDemo) exitCode(timeout time.Duration) (code int, ok bool) {
	select {
	case <-d.exited:
	case <-time.After(timeout):
		return 0, false
	}
	select {
	case <-d.logged:
	case <-time.After(timeout):
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode(), true
	}
	if d.err != nil {
		return -1, true
	}
	return 0, true
}

// terminate sends SIGTERM and returns the exit status.
func (d *rawDemo) terminate(t *testing.T) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, exited := d.exitCode(30 * time.Second)
	if !exited {
		t.Fatalf("baton-demo still running 30 s after SIGTERM\n%s", d.log())
	}
	return code
}

// log returns what the process wrote so far.
func (d *rawDemo) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// rootAt asks GET / of the baton-demo serving at addr, on a new connection.
func rootAt(t *testing.T, addr string) demotest.RootReply {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r demotest.RootReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: status %d, %v", resp.StatusCode, err)
	}
	return r
}
