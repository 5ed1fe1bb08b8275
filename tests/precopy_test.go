package tests

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestUpgradePreCopy: real processes whose state (a table of 200,000
// numbers that a writer changes a thousand times a second and more) moves
// in rounds: the first and the middle ones while the old process runs, the
// last, after its freeze, what changed since. Under load, every upgrade hands over the
// table exactly as the writer left it at the freeze (the new process checks
// every entry), and no request fails. Then the kills between the rounds:
// the old process killed once it sent the first round (the new one, its
// first round undone, starts as an orphan: here without a state file, with
// an empty table) and the new process dying while it restores the first
// round (the old one was never frozen, its writer never stopped, it stops
// tracking and serves on; the next upgrade works); and the same two after
// and in a middle round.
func TestUpgradePreCopy(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "precopysvc")
	if err := demotest.Build("./tests/precopysvc", bin, demotest.BuildOpts{Version: "test", Tags: "batonfault"}); err != nil {
		t.Fatal(err)
	}
	start := func(t *testing.T, env ...string) *upgradertest.Service {
		args := []string{"-pidfile", "{dir}/service.pid"}
		if strings.Contains(t.Name(), "middle_round") {
			// A first round that takes longer than a quick one
			// (upgrader's 5 ms), whatever the machine: a middle
			// round follows it.
			args = append(args, "-entries", "2000000")
		}
		return upgradertest.Start(t, bin, upgradertest.Options{
			Args:    args,
			Env:     env,
			Serving: "serving",
			Output:  io.Discard,
		})
	}

	t.Run("two rounds under load", func(t *testing.T) {
		s := start(t)
		first := s.Pid(t)
		time.Sleep(200 * time.Millisecond) // the writer writes
		upgradertest.CheckUpgrades(t, s, 2, 200*time.Millisecond,
			upgradertest.LoadConfig{Clients: 2, Fresh: 0.5, Rate: 100})
		var pids []int // in the order they served
		for _, l := range s.Logs.Lines(0) {
			if l.Msg == "serving" && !slices.Contains(pids, l.Pid) {
				pids = append(pids, l.Pid)
			}
		}
		if len(pids) != 3 || pids[0] != first {
			t.Fatalf("generations %v, want 3 from %d", pids, first)
		}
		for i := 1; i < len(pids); i++ {
			old, nw := pids[i-1], pids[i]
			sent := wantLine(t, s, upgradertest.Match{Msg: "pre-copy sent", Pid: old})
			frozen := wantLine(t, s, upgradertest.Match{Msg: "participants frozen", Pid: old})
			stateSent := wantLine(t, s, upgradertest.Match{Msg: "state sent", Pid: old})
			if lineIndex(s, "pre-copy sent", old) > lineIndex(s, "participants frozen", old) {
				t.Errorf("pid %d froze before it sent the first round", old)
			}
			pre, _ := strconv.Atoi(sent.Fields["bytes"])
			final, _ := strconv.Atoi(stateSent.Fields["bytes"])
			t.Logf("upgrade %d: first round %d bytes (%s), last %d bytes; %s", i, pre, sent.Fields["took"], final, frozen.Fields["took"])
			for _, l := range s.Logs.Lines(0) {
				if l.Pid == old && (l.Msg == "pre-copy sent" || l.Msg == "new process restored the pre-copy") {
					t.Logf("  %s: round %s, %s bytes, took %s%s, another round %s", l.Msg, l.Fields["round"], l.Fields["bytes"],
						l.Fields["took"], l.Fields["round_took"], l.Fields["another_round"])
				}
			}
			if pre < 1_600_000 || final*4 > pre {
				t.Errorf("first round %d bytes, second %d: want the table in the first and a fraction of it in the second", pre, final)
			}
			wantLine(t, s, upgradertest.Match{Msg: "pre-copy restored", Pid: nw})
			at := wantLine(t, s, upgradertest.Match{Msg: "table frozen", Pid: old}).Fields["last"]
			got := wantLine(t, s, upgradertest.Match{Msg: "table restored", Pid: nw})
			if got.Fields["consistent"] != "true" || got.Fields["last"] != at {
				t.Errorf("pid %d restored the table at step %s (consistent %s); pid %d froze it at step %s",
					nw, got.Fields["last"], got.Fields["consistent"], old, at)
			}
			if at == "0" {
				t.Errorf("pid %d froze an unwritten table", old)
			}
		}
	})

	// The old process killed after a round sent while it runs: the first,
	// or a middle one (round 2).
	for _, tt := range []roundFault{
		{"old killed after the first round", upgradertest.FaultOldKillAfterPreCopy, "1"},
		{"old killed after a middle round", upgradertest.FaultOldKillAfterMiddleRound, "2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, upgradertest.Fault(tt.fault, 0, 1))
			old := s.Pid(t)
			mark := s.Logs.Len()
			if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			if err := upgradertest.WaitExit(old, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			orphan, err := s.Logs.WaitFrom(mark, 10*time.Second, upgradertest.Match{Msg: "previous generation died before handing over its state: starting with no state"})
			if err != nil {
				t.Fatalf("%v\n%s", err, s.Logs)
			}
			nw := orphan.Pid
			wantLine(t, s, upgradertest.Match{Msg: "pre-copy restored", Pid: nw, Fields: map[string]string{"round": "1"}})
			wantLine(t, s, upgradertest.Match{Msg: "pre-copy sent", Pid: old, Fields: map[string]string{"round": tt.round}})
			got := wantLine(t, s, upgradertest.Match{Msg: "table restored", Pid: nw})
			if got.Fields["last"] != "0" || got.Fields["consistent"] != "true" {
				t.Errorf("the orphan restored %v: want every round undone, an empty table", got.Fields)
			}
			if _, err := s.Logs.WaitFrom(mark, 10*time.Second, upgradertest.Match{Msg: "serving", Pid: nw}); err != nil {
				t.Fatal(err)
			}
			if pid := servingPid(t, s); pid != nw {
				t.Errorf("pid %d serves, want the orphan %d", pid, nw)
			}
			if strings.Contains(linesOf(s, old), `msg="participants frozen"`) {
				t.Errorf("pid %d froze before it was killed", old)
			}
			if _, err := s.Upgrade(t, 30*time.Second); err != nil {
				t.Fatalf("the next upgrade: %v\n%s", err, s.Logs)
			}
		})
	}

	// The new process dying while it restores the first round, or the
	// first middle one (round 2).
	for _, tt := range []roundFault{
		{"new process dies in the first round", upgradertest.FaultNewPreRestoring, "1"},
		{"new process dies in a middle round", upgradertest.FaultNewMiddleRestoring, "2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, upgradertest.Fault(tt.fault, 1, 1))
			old := s.Pid(t)
			mark := s.Logs.Len()
			before := lastStep(t, s)
			if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			failed, err := s.Logs.WaitFrom(mark, 20*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
			if err != nil {
				t.Fatalf("%v\n%s", err, s.Logs)
			}
			t.Logf("the upgrade failed: %s", failed.Fields["err"])
			if tt.round == "2" { // the first round went, and another followed it
				wantLine(t, s, upgradertest.Match{Msg: "new process restored the pre-copy", Pid: old,
					Fields: map[string]string{"round": "1", "another_round": "true"}})
			}
			wantLine(t, s, upgradertest.Match{Msg: "pre-copy stopped", Pid: old})
			if l := linesOf(s, old); strings.Contains(l, `msg="participants frozen"`) || strings.Contains(l, `msg="table frozen"`) {
				t.Errorf("pid %d froze although its new process never restored round %s", old, tt.round)
			}
			if pid := servingPid(t, s); pid != old {
				t.Fatalf("pid %d serves, want the old %d", pid, old)
			}
			time.Sleep(50 * time.Millisecond)
			if after := lastStep(t, s); after <= before {
				t.Errorf("the old process's writer stopped: step %d before the upgrade, %d after", before, after)
			}
			nw, err := s.Upgrade(t, 30*time.Second)
			if err != nil {
				t.Fatalf("the next upgrade: %v\n%s", err, s.Logs)
			}
			if got := wantLine(t, s, upgradertest.Match{Msg: "table restored", Pid: nw}); got.Fields["consistent"] != "true" || got.Fields["last"] == "0" {
				t.Errorf("after the failed attempt the next one restored %v", got.Fields)
			}
		})
	}
}

// roundFault is a fault of TestUpgradePreCopy: name, the fault, and the
// round it strikes after (the old process killed) or in (the new one dying).
type roundFault struct {
	name  string
	fault upgradertest.FaultStep
	round string
}

// wantLine returns the first line of s's log matching m, waiting up to
// 10 s for it.
func wantLine(t *testing.T, s *upgradertest.Service, m upgradertest.Match) upgradertest.Line {
	t.Helper()
	l, err := s.Logs.Wait(10*time.Second, m)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs)
	}
	return l
}

// lineIndex returns the position in s's log of the first line of pid with
// msg, -1 if none.
func lineIndex(s *upgradertest.Service, msg string, pid int) int {
	for i, l := range s.Logs.Lines(0) {
		if l.Msg == msg && l.Pid == pid {
			return i
		}
	}
	return -1
}

// linesOf returns what pid logged, one line each.
func linesOf(s *upgradertest.Service, pid int) string {
	var b strings.Builder
	for _, l := range s.Logs.Lines(0) {
		if l.Pid == pid {
			fmt.Fprintln(&b, l.Raw)
		}
	}
	return b.String()
}

// servingAnswer asks the service who serves and at which step its writer
// is: "pid last".
func servingAnswer(t *testing.T, s *upgradertest.Service) (pid int, last uint64) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if _, err := fmt.Sscan(string(b), &pid, &last); err != nil {
		t.Fatalf("GET / answered %q: %v", b, err)
	}
	return pid, last
}

func servingPid(t *testing.T, s *upgradertest.Service) int {
	pid, _ := servingAnswer(t, s)
	return pid
}

func lastStep(t *testing.T, s *upgradertest.Service) uint64 {
	_, last := servingAnswer(t, s)
	return last
}
