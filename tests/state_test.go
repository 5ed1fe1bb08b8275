package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// kvSeed is baton-demo's default -kv-entries.
const kvSeed = 2000

// waitFinalCounts waits until the serving generation has the counts its
// predecessor made while draining: the predecessor sends them when it has
// drained, and its exit alone does not say they have been applied.
func waitFinalCounts(t *testing.T, p *demotest.Proc) {
	t.Helper()
	pid := p.Pid(t)
	if _, err := p.Logs.Wait(20*time.Second, upgradertest.Match{Msg: "final counts received from the previous generation", Pid: pid}); err != nil {
		t.Fatalf("generation %d: %v\n%s", pid, err, p.Logs)
	}
}

// assertStateIntact checks the demo's application state after gens
// upgrades: the hits counter equals every GET / answered, once, and the map
// has its seed and one entry per generation.
func assertStateIntact(t *testing.T, p *demotest.Proc, r *upgradertest.LoadReport, gens int) {
	t.Helper()
	if gens > 0 {
		waitFinalCounts(t, p)
	}
	root := p.Root(t)
	if want := uint64(r.Gets + p.Gets.Load()); root.Hits != want {
		sent, received := 0, 0
		for _, l := range p.Logs.Lines(0) {
			switch l.Msg {
			case "final counts sent to the new process":
				sent++
			case "final counts received from the previous generation":
				received++
			}
		}
		t.Errorf("hits = %d after %d generations; %d GET / were answered (final counts sent %d, received %d)",
			root.Hits, gens+1, want, sent, received)
		if f, err := os.Create(filepath.Join(os.TempDir(), "baton-hits-failure.log")); err == nil {
			for _, l := range p.Logs.Lines(0) {
				fmt.Fprintln(f, l.Raw)
			}
			f.Close()
		}
	}
	kv := p.KV(t)
	if kv.Count != kvSeed+gens+1 {
		t.Errorf("map has %d entries, want %d seeded + %d generations", kv.Count, kvSeed, gens+1)
	}
	for i := 0; i < kvSeed; i++ {
		k := fmt.Sprintf("key-%05d", i)
		if e, ok := kv.Entries[k]; !ok || e.Value != "value-"+strconv.Itoa(i) {
			t.Fatalf("entry %s = %+v, %v", k, e, ok)
		}
	}
	for g := 0; g <= gens; g++ {
		if _, ok := kv.Entries["gen-"+strconv.Itoa(g)]; !ok {
			t.Errorf("entry of generation %d is missing", g)
		}
	}
}

func TestSchemaMigration(t *testing.T) {
	p := demotest.Start(t, demoV1)
	if kv := p.KV(t); kv.Schema != 1 {
		t.Fatalf("v1 schema %d", kv.Schema)
	}
	upgradertest.Install(t, demoV2, p.Bin)
	if u := p.Upgrade(t); u.Err != "" {
		t.Fatal(u.Err)
	}
	kv := p.KV(t)
	if kv.Schema != 2 || kv.Count != kvSeed+2 {
		t.Fatalf("after v1 -> v2: schema %d, %d entries", kv.Schema, kv.Count)
	}
	// Entries written by v1 went through the 1 -> 2 migration; v2 wrote
	// its own entry with its generation.
	if e := kv.Entries["key-00007"]; e.Value != "value-7" || e.Gen != -1 {
		t.Errorf("migrated entry: %+v, want value-7 gen -1", e)
	}
	if e := kv.Entries["gen-0"]; e.Gen != -1 {
		t.Errorf("v1's own entry after migration: %+v", e)
	}
	if e := kv.Entries["gen-1"]; e.Gen != 1 {
		t.Errorf("v2's entry: %+v", e)
	}
}

// TestRejectedStateKeepsServing: an upgrade to a binary that cannot read
// the state, and one whose new process dies while receiving it, both fail
// before anything changes hands; the old process keeps serving with all
// its state, and a good upgrade then carries everything over.
func TestRejectedStateKeepsServing(t *testing.T) {
	tests := []struct {
		name    string
		bin     string
		env     []string
		broken  string // installed for the failing upgrade; "" keeps bin
		wantErr string
		// wantLog is what the old process logs: a refusal before
		// freezing anything, or a thaw after the failure.
		wantLog string
	}{
		{name: "new binary cannot read the state", bin: demoV1, broken: demoV3, wantErr: "rejected the state",
			wantLog: "handoff: refusing to hand over state"},
		{name: "new process dies while receiving", bin: demoFault, env: []string{upgradertest.Fault(upgradertest.FaultNewRestoring, 1, 1)},
			wantErr: "exit status 7", wantLog: "participants thawed: carrying on"},
		{name: "new process rejects the state", bin: demoFault, env: []string{upgradertest.Fault(upgradertest.FaultNewReject, 1, 1)},
			wantErr: "rejected the state", wantLog: "participants thawed: carrying on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demotest.StartEnv(t, tt.env, tt.bin, t.TempDir())
			first := p.Pid(t)
			r := underLoad(t, standardLoad(p.URL), func() {
				if tt.broken != "" {
					upgradertest.Install(t, tt.broken, p.Bin)
				}
				u := p.Upgrade(t)
				if u.Err == "" || !strings.Contains(u.Err, tt.wantErr) {
					t.Fatalf("upgrade error %q, want one saying %q", u.Err, tt.wantErr)
				}
				if _, err := p.Logs.Wait(5*time.Second, upgradertest.Match{Msg: tt.wantLog, Pid: first}); err != nil {
					t.Errorf("old process: %v", err)
				}
				if got := p.Root(t); got.Pid != first {
					t.Fatalf("pid %d serves after the failure, want %d", got.Pid, first)
				}
				if tt.broken != "" {
					upgradertest.Install(t, tt.bin, p.Bin)
				}
				if u := p.Upgrade(t); u.Err != "" {
					t.Fatalf("good upgrade after the failure: %s", u.Err)
				}
				if err := upgradertest.WaitExit(first, 15*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			assertNoFailures(t, r)
			assertStateIntact(t, p, r, 1)
		})
	}
}

func TestColdStartFromStateFile(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "demo.state")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-state-file", stateFile)
	for i := 0; i < 5; i++ {
		p.Root(t)
	}
	if u := p.Upgrade(t); u.Err != "" {
		t.Fatal(u.Err)
	}
	pid := p.Pid(t)
	waitFinalCounts(t, p)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := upgradertest.WaitExit(pid, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	q := demotest.StartEnv(t, nil, demoV1, dir, "-state-file", stateFile)
	if _, err := q.Logs.Wait(5*time.Second, upgradertest.Match{Msg: "state restored from file"}); err != nil {
		t.Fatalf("cold start: %v\n%s", err, q.Logs)
	}
	before := uint64(p.Gets.Load())
	if got := q.Root(t); got.Hits != before+1 || got.Generation != 0 {
		t.Errorf("after a cold start: %+v, want hits %d (%d before the stop, then this one) at generation 0", got, before+1, before)
	}
	kv := q.KV(t)
	if kv.Count != kvSeed+2 {
		t.Errorf("map has %d entries after the cold start, want %d", kv.Count, kvSeed+2)
	}
	if kv.Entries["gen-1"].Value != strconv.Itoa(pid) {
		t.Errorf("generation 1's entry did not survive the restart: %+v", kv.Entries["gen-1"])
	}
}

// fdCount counts the sockets, pipes and memfds pid has open: what a handoff
// could leak. Files the runtime opens for itself (cgroup limits) are not
// counted.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	n := 0
	for _, l := range fdLinks(pid) {
		_, target, _ := strings.Cut(l, "=")
		if strings.HasPrefix(target, "socket:") || strings.HasPrefix(target, "pipe:") ||
			strings.HasPrefix(target, "/memfd:") || strings.HasPrefix(target, "anon_inode:[pidfd]") {
			n++
		}
	}
	return n
}

func fdLinks(pid int) []string {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range entries {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		out = append(out, e.Name()+"="+l)
	}
	return out
}

// TestFailedUpgradesLeakNoFds: 100 failed upgrades, half with a new process
// that dies at start and half with one that cannot read the state, leave the
// old process with the fds it had.
func TestFailedUpgradesLeakNoFds(t *testing.T) {
	p := demotest.Start(t, demoV1)
	// Measure a generation that was started by an upgrade, once its parent
	// is gone, and after one failed attempt: the first upgrade and the
	// first attempt open fds that stay (the runtime's poller, the parent's
	// pipe until it closes).
	u := p.Upgrade(t)
	if err := upgradertest.WaitExit(u.OldPid, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := u.NewPid
	upgradertest.Install(t, demoV3, p.Bin)
	if u := p.Upgrade(t); u.Err == "" {
		t.Fatal("upgrade to v3 succeeded")
	}
	before := fdCount(t, pid)
	for i := 0; i < 100; i++ {
		if i%2 == 0 {
			upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 3\n"), p.Bin, 0o755)
		} else {
			upgradertest.Install(t, demoV3, p.Bin)
		}
		if u := p.Upgrade(t); u.Err == "" {
			t.Fatalf("upgrade %d succeeded", i)
		}
	}
	// tableflip closes a dead child's pipes just after it reports the
	// exit, so the count may take a moment to settle.
	after := fdCount(t, pid)
	for deadline := time.Now().Add(5 * time.Second); after != before && time.Now().Before(deadline); after = fdCount(t, pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if after != before {
		t.Errorf("old process had %d fds before 100 failed upgrades and %d after: %v", before, after, fdLinks(pid))
	}
	if got := p.Root(t); got.Pid != pid {
		t.Errorf("pid %d serves, want %d", got.Pid, pid)
	}
}
