package tests

import (
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestOldKilledAtEveryStep: the old process is SIGKILLed (the OOM killer, an
// operator) at each step of the handoff, under load, with tasks running.
// Whatever the step, one process serves afterwards at generation 1 and the
// pid file names it; the requests the old process had read when it died are
// the only failures; the next upgrade works. (After the freeze, with and
// without a state file, is TestOldKilledAfterFreeze; after the send,
// TestOldProcessFaults/sigkill-after-freeze.)
func TestOldKilledAtEveryStep(t *testing.T) {
	tests := []struct {
		name string
		step upgradertest.FaultStep
		// seen is what the new process logs when it finds its parent gone.
		seen string
		// full: the new process had the whole state, so every task goes on
		// without a gap or a repeat. Otherwise it starts with no state.
		full bool
	}{
		{name: "mid-capture", step: upgradertest.FaultOldKillMidCapture,
			seen: "previous generation died before handing over its state: starting with no state"},
		{name: "after-ready", step: upgradertest.FaultOldKillAfterReady, full: true,
			seen: "handoff: previous generation gone without final counts"},
		{name: "mid-drain", step: upgradertest.FaultOldKillMidDrain, full: true,
			seen: "handoff: previous generation gone without final counts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, demoFault, []string{upgradertest.Fault(tt.step, 0, 1)})
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			newPid := upgradeKillingOld(t, s, old, tt.step, tt.seen, nil)

			last := upgradeOK(t, s)
			waitTaskRuns(t, s, 2)
			stopAndWait(t, s.Proc)
			c := checkTaskLog(t, s.taskLog)
			if tt.full {
				assertTasksExact(t, relTasks, c, old, newPid, last)
			} else {
				t.Logf("task log (an empty start: tasks begin again at 1): %s", c)
				for _, pid := range []int{old, newPid, last} {
					if c.byPid[pid] == 0 {
						t.Errorf("no task ran in pid %d; runs by pid: %v", pid, c.byPid)
					}
				}
			}
			assertOnlyAlive(t, s)
		})
	}
}

// upgradeKillingOld triggers an upgrade of old under the standard load, in
// which the old process kills itself at step, and waits for the new one to
// log seen and serve at generation 1 (then during, if not nil). It checks
// what a client sees: only requests sent after the trigger fail, as a reset
// or an EOF (those the old process had read), and the new process is the
// only one alive. It returns the new pid.
func upgradeKillingOld(t *testing.T, s *service, old int, step upgradertest.FaultStep, seen string, during func(newPid int, mark int)) int {
	t.Helper()
	cfg := standardLoad(s.URL)
	cfg.Latencies = true
	var triggered time.Time
	var newPid int
	r := underLoad(t, cfg, func() {
		triggered = time.Now()
		mark := hup(t, s, old)
		waitRaw(t, s, "baton fault injected: "+string(step)+"@0.1")
		if err := upgradertest.WaitExit(old, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		newPid = waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: seen}).Pid
		waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "serving", Pid: newPid})
		if got := s.Root(t); got.Pid != newPid || got.Generation != 1 {
			t.Fatalf("after the kill %+v serves, want pid %d at generation 1", got, newPid)
		}
		if got := s.Pid(t); got != newPid {
			t.Errorf("the pid file names %d, want %d", got, newPid)
		}
		if during != nil {
			during(newPid, mark)
		}
		waitTaskRuns(t, s, 2)
	})
	// Requests the old process had read when it was killed fail; the
	// listening socket, held by the new process, never stops accepting.
	t.Logf("clients saw %d failed requests (%v) of %d", r.Failed(), r.Failures, r.Requests)
	if n := failedBefore(r, triggered); n > 0 {
		t.Errorf("%d requests sent before the kill failed", n)
	}
	assertFailureKinds(t, r, upgradertest.Reset, upgradertest.EOF)
	assertOnlyAlive(t, s, newPid)
	return newPid
}
