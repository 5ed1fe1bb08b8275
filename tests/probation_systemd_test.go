package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/sdns"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestProbationRollsBackUnderSystemd is TestNewProcessCrashesAfterReadyUnderSystemd
// with -probation 3s: the new process serves, then crashes 300 ms after its
// ready. The old process takes the service back before MAINPID= ever named
// the new one, so systemd restarts nothing: `systemctl reload` fails (baton
// upgrade --wait exits 4), MainPID is still the old process, NRestarts stays
// 0, and the old process serves. The next reload (no fault) succeeds and
// hands MAINPID to the new process only then.
func TestProbationRollsBackUnderSystemd(t *testing.T) {
	e := bootSystemd(t)
	fault := e.in.Install(t, demoFault, "baton-demo-fault")
	upgradertest.Install(t, fault, e.bin)
	const unit, port = "probation.service", 8111
	text := e.unit(unit, fmt.Sprintf("127.0.0.1:%d", port),
		"Environment="+upgradertest.Fault(upgradertest.FaultNewCrashServing, 1, 1)+" "+
			upgradertest.FaultDelay(300*time.Millisecond)+"\nRestart=on-failure\nRestartSec=100ms")
	text = strings.Replace(text, " -drain 10s", " -drain 10s -probation 3s", 1)
	e.in.InstallUnit(t, unit, text)
	e.in.Start(t, unit)
	defer e.in.Output("systemctl", "stop", unit)
	first := e.state(t, unit)
	if !first.running() || first.NRestarts != "0" {
		t.Fatalf("after start: %+v", first)
	}

	out, err := e.in.Output("systemctl", "reload", unit)
	t.Logf("systemctl reload: %v %s", err, out)
	if err == nil {
		t.Errorf("systemctl reload succeeded; want it to fail: the release was rolled back")
	}
	after := e.state(t, unit)
	journal := e.in.UnitJournal(t, unit)
	t.Logf("after the rollback: %+v", after)
	if after.MainPID != first.MainPID || after.NRestarts != "0" || !after.running() {
		t.Errorf("after the rollback: %+v; want MainPID %d, NRestarts 0, running\n%s", after, first.MainPID, journal)
	}
	for _, want := range []string{"baton fault: crashing now: new-crash-serving@1.1", "probation failed: this process took the service back",
		"rolled back, the old process"} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal does not say %q:\n%s", want, journal)
		}
	}
	if strings.Contains(journal, "Scheduled restart job") {
		t.Errorf("systemd restarted the service:\n%s", journal)
	}
	if got := e.root(t, port); got.Pid != first.MainPID || got.Generation != 0 {
		t.Errorf("after the rollback GET / = %+v, want generation 0 from pid %d", got, first.MainPID)
	}
	if pid := e.pidFile(t, "/run/probation/pid"); pid != first.MainPID {
		t.Errorf("the pid file names %d, want %d", pid, first.MainPID)
	}

	// The next upgrade has no fault (attempt 2): it succeeds, and MAINPID
	// goes to the new process at the end of its probation.
	if out, err := e.in.Output("systemctl", "reload", unit); err != nil {
		t.Fatalf("second reload: %v %s\n%s", err, out, e.in.UnitJournal(t, unit))
	}
	var final unitState
	sdns.Poll(t, 10*time.Second, "the old process to exit", func() bool {
		final = e.state(t, unit)
		return final.running() && final.MainPID != first.MainPID && final.NRestarts == "0"
	})
	if got := e.root(t, port); got.Pid != final.MainPID || got.Generation != 1 {
		t.Errorf("after the second reload GET / = %+v, want generation 1 from pid %d", got, final.MainPID)
	}
}
