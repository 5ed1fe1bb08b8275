// Package demotest builds and drives baton-demo as a user would: a real
// binary in a temporary directory, real signals, real sockets on 127.0.0.1.
// The end-to-end tests and the upgrade benchmark use it.
package demotest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// Root returns the module's root directory, found from this file.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// GoTool returns the go command of the toolchain running the tests.
func GoTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BuildOpts are the variants of a build.
type BuildOpts struct {
	Version  string // main.version
	KVSchema string // main.kvSchema of baton-demo; empty keeps the default
	Tags     string // build tags, such as batonfault
}

// Build compiles a package of the module (such as "./cmd/baton-demo") into
// out.
func Build(pkg, out string, o BuildOpts) error {
	ldflags := "-X main.version=" + o.Version
	if o.KVSchema != "" {
		ldflags += " -X main.kvSchema=" + o.KVSchema
	}
	args := []string{"build", "-o", out, "-ldflags", ldflags}
	if o.Tags != "" {
		args = append(args, "-tags", o.Tags)
	}
	cmd := exec.Command(GoTool(), append(args, pkg)...)
	cmd.Dir = Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Proc is a running service: the first generation started by the test and
// the generations that replaced it.
type Proc struct {
	Dir     string // the service's directory: binary, pid file
	Bin     string // path of the binary the service re-executes
	PidFile string
	Addr    string // host:port it serves HTTP on
	Logs    *Logs
	// Gets counts the GET / requests this package sent and saw answered.
	Gets atomic.Int64

	cmd *exec.Cmd
}

// Start copies bin into a new directory and starts it there with the given
// extra arguments, on 127.0.0.1:0, and waits until it serves. The process
// and every generation after it are stopped when the test ends.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, nil, bin, t.TempDir(), args...)
}

// StartEnv is Start with extra environment variables and a given directory.
func StartEnv(t testing.TB, env []string, bin, dir string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Dir: dir, Bin: filepath.Join(dir, "baton-demo"), PidFile: filepath.Join(dir, "demo.pid")}
	args = append([]string{"-addr", "127.0.0.1:0", "-pidfile", p.PidFile}, args...)
	p.start(t, env, bin, args)
	line, err := p.Logs.Wait(10*time.Second, Match{Msg: "serving", Pid: p.cmd.Process.Pid})
	if err != nil {
		t.Fatalf("baton-demo did not start: %v\n%s", err, p.Logs)
	}
	p.Addr = line.Fields["addr"]
	return p
}

// StartCmd starts another service built on the upgrader, such as the
// handoff benchmark's, with exactly args, and waits for its "serving" line.
// Its pid file must be dir/demo.pid.
func StartCmd(t testing.TB, bin, dir string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Dir: dir, Bin: filepath.Join(dir, filepath.Base(bin)), PidFile: filepath.Join(dir, "demo.pid")}
	p.start(t, nil, bin, args)
	if _, err := p.Logs.Wait(10*time.Second, Match{Msg: "serving", Pid: p.cmd.Process.Pid}); err != nil {
		t.Fatalf("%s did not start: %v\n%s", bin, err, p.Logs)
	}
	return p
}

func (p *Proc) start(t testing.TB, env []string, bin string, args []string) {
	t.Helper()
	Install(t, bin, p.Bin)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(p.Bin, args...)
	p.cmd.Dir = p.Dir
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stderr = w
	p.cmd.Stdout = w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p.Logs = newLogs(r, t)
	t.Cleanup(p.stop)
}

// stop ends the serving generation and any other still alive, by pid.
func (p *Proc) stop() {
	for _, pid := range p.Logs.Pids() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	p.cmd.Wait()
}

// cleanEnv is the test's environment without the variables through which a
// service manager talks to its service: a test run from a systemd unit must
// not make the demo attach to it.
func cleanEnv() []string {
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

// URL is the service's base URL.
func (p *Proc) URL() string { return "http://" + p.Addr }

// Pid returns the pid in the pid file: the ready generation's.
func (p *Proc) Pid(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(p.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	return pid
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

// InstallBytes writes b to dst with mode, atomically.
func InstallBytes(t testing.TB, b []byte, dst string, mode os.FileMode) {
	t.Helper()
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// Upgrade is the outcome of one SIGHUP.
type Upgrade struct {
	OldPid, NewPid int
	// Serving is the time from the signal to the first reply from NewPid.
	Serving time.Duration
	// Err is the failure the old process logged, if the upgrade failed.
	Err string
}

// Upgrade sends SIGHUP to the serving generation, waits for its verdict and,
// on success, for a reply from the new process.
func (p *Proc) Upgrade(t testing.TB) Upgrade {
	t.Helper()
	old := p.Pid(t)
	mark := p.Logs.Len()
	start := time.Now()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP %d: %v", old, err)
	}
	line, err := p.Logs.WaitFrom(mark, 90*time.Second,
		Match{Msg: "upgraded", Pid: old}, Match{Msg: "upgrade failed: still serving", Pid: old})
	if err != nil {
		t.Fatalf("no verdict on the upgrade of %d: %v\n%s", old, err, p.Logs)
	}
	u := Upgrade{OldPid: old}
	if line.Msg != "upgraded" {
		u.Err = line.Fields["err"]
		return u
	}
	u.NewPid, _ = strconv.Atoi(line.Fields["new_pid"])
	u.Serving, err = p.firstReplyFrom(u.NewPid, start)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// firstReplyFrom asks on fresh connections until the reply comes from pid.
func (p *Proc) firstReplyFrom(pid int, since time.Time) (time.Duration, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.Get(p.URL() + "/")
		if err != nil {
			return 0, fmt.Errorf("probe: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			p.Gets.Add(1)
		}
		if resp.Header.Get("X-Pid") == strconv.Itoa(pid) {
			return time.Since(since), nil
		}
	}
	return 0, fmt.Errorf("pid %d never answered", pid)
}

// RootReply is baton-demo's answer to GET /.
type RootReply struct {
	Pid        int    `json:"pid"`
	Generation int    `json:"generation"`
	Version    string `json:"version"`
	Hits       uint64 `json:"hits"`
}

// Root asks GET / on a new connection: a kept-alive one may still reach a
// draining generation, which answers, as it should.
func (p *Proc) Root(t testing.TB) RootReply {
	t.Helper()
	var r RootReply
	p.getJSON(t, "/", &r)
	p.Gets.Add(1)
	return r
}

// KV is baton-demo's answer to GET /kv.
type KV struct {
	Schema  int `json:"schema"`
	Count   int `json:"count"`
	Entries map[string]struct {
		Value string `json:"value"`
		Gen   int    `json:"gen"`
	} `json:"entries"`
}

// KV asks GET /kv on a new connection.
func (p *Proc) KV(t testing.TB) KV {
	t.Helper()
	var kv KV
	p.getJSON(t, "/kv", &kv)
	return kv
}

func (p *Proc) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(p.URL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// WaitExit waits until pid has exited; see upgradertest.WaitExit.
func WaitExit(pid int, timeout time.Duration) error { return upgradertest.WaitExit(pid, timeout) }

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// Line is one parsed log line of slog's text format.
type Line struct {
	Raw    string
	Msg    string
	Pid    int
	Fields map[string]string
}

var fieldRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

func parseLine(s string) Line {
	l := Line{Raw: s, Fields: map[string]string{}}
	for _, m := range fieldRE.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if uq, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
			v = uq
		}
		if _, dup := l.Fields[m[1]]; !dup {
			l.Fields[m[1]] = v
		}
	}
	l.Msg = l.Fields["msg"]
	l.Pid, _ = strconv.Atoi(l.Fields["pid"])
	return l
}

// Match selects log lines: by message and, if not zero, pid.
type Match struct {
	Msg string
	Pid int
}

func (m Match) match(l Line) bool {
	return l.Msg == m.Msg && (m.Pid == 0 || l.Pid == m.Pid)
}

// Logs collects the lines every generation writes to the shared stderr.
type Logs struct {
	mu      sync.Mutex
	lines   []Line
	pids    map[int]bool
	changed chan struct{} // closed and replaced on every new line
	done    bool
}

func newLogs(r io.ReadCloser, t testing.TB) *Logs {
	l := &Logs{changed: make(chan struct{}), pids: map[int]bool{}}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := parseLine(sc.Text())
			l.mu.Lock()
			l.lines = append(l.lines, line)
			if line.Pid > 0 {
				l.pids[line.Pid] = true
			}
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.done = true
		close(l.changed)
		l.mu.Unlock()
	}()
	// Registered before the process cleanup, so it runs after it: once every
	// generation is gone the pipe ends.
	t.Cleanup(func() {
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Errorf("log pipe still open 10s after the test: a generation is still running")
		}
	})
	return l
}

// Len is the number of lines so far.
func (l *Logs) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// Pids lists every pid that logged.
func (l *Logs) Pids() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for p := range l.pids {
		out = append(out, p)
	}
	return out
}

// Lines returns the lines from index from on.
func (l *Logs) Lines(from int) []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Line(nil), l.lines[from:]...)
}

// Wait waits for the first line matching any of ms.
func (l *Logs) Wait(timeout time.Duration, ms ...Match) (Line, error) {
	return l.WaitFrom(0, timeout, ms...)
}

// WaitFrom waits for a line matching any of ms at index from or later.
func (l *Logs) WaitFrom(from int, timeout time.Duration, ms ...Match) (Line, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for ; from < len(l.lines); from++ {
			for _, m := range ms {
				if m.match(l.lines[from]) {
					line := l.lines[from]
					l.mu.Unlock()
					return line, nil
				}
			}
		}
		changed, done := l.changed, l.done
		l.mu.Unlock()
		if done {
			return Line{}, errors.New("log ended")
		}
		select {
		case <-changed:
		case <-deadline.C:
			return Line{}, fmt.Errorf("timed out after %v waiting for %v", timeout, ms)
		}
	}
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	start := max(0, len(l.lines)-60)
	for _, line := range l.lines[start:] {
		b.WriteString(line.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}
