// Package demotest builds and drives baton-demo as a user would: a real
// binary in a temporary directory, real signals, real sockets on 127.0.0.1.
// It is the test kit, upgradertest, with what only baton-demo has: its
// build variants, its log's verdict on an upgrade and its endpoints. The
// end-to-end tests and the upgrade benchmark use it.
package demotest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// Proc is a running baton-demo: the kit's Service, which holds the first
// generation started by the test and the generations that replaced it,
// with what the demo's own log and endpoints tell.
type Proc struct {
	*upgradertest.Service
	Addr string // host:port it serves HTTP on
	// Gets counts the GET / requests this package sent and saw answered.
	Gets atomic.Int64
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
	args = append([]string{"-addr", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "demo.pid")}, args...)
	s := upgradertest.Start(t, bin, upgradertest.Options{Dir: dir, Name: "baton-demo", PIDFile: "demo.pid",
		Args: args, Env: env, Serving: "serving", Output: io.Discard})
	return &Proc{Service: s, Addr: strings.TrimPrefix(s.URL, "http://")}
}

// StartCmd starts another service built on the upgrader, such as the
// handoff benchmark's, with exactly args, and waits for its "serving" line.
// Its pid file must be dir/demo.pid.
func StartCmd(t testing.TB, bin, dir string, args ...string) *Proc {
	t.Helper()
	s := upgradertest.Start(t, bin, upgradertest.Options{Dir: dir, PIDFile: "demo.pid",
		Args: args, Serving: "serving", Output: io.Discard})
	return &Proc{Service: s, Addr: strings.TrimPrefix(s.URL, "http://")}
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
// on success, for a reply from the new process. It takes the place of the
// kit's Service.Upgrade, which learns only whether an upgrade happened:
// the demo's log also says why one failed.
func (p *Proc) Upgrade(t testing.TB) Upgrade {
	t.Helper()
	old := p.Pid(t)
	mark := p.Logs.Len()
	start := time.Now()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP %d: %v", old, err)
	}
	line, err := p.Logs.WaitFrom(mark, 90*time.Second,
		upgradertest.Match{Msg: "upgraded", Pid: old}, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
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
		resp, err := c.Get(p.URL + "/")
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
	resp, err := c.Get(p.URL + path)
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
