package upgradertest_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
	"go.uber.org/goleak"
)

// TestExampleUserTest is a user's own test of a service built on the
// upgrader, as it would stand in the service's repository: baton-demo
// plays the service. It starts the real binary, checks that upgrades under
// load lose no request, deploys a broken binary and checks that the old
// process keeps serving and says why, then deploys a good one again.
func TestExampleUserTest(t *testing.T) {
	// Last, after the kit has stopped the service and its log reader.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	bin := buildDemo(t, "") // a user's test builds its own cmd/ here

	s := upgradertest.Start(t, bin, upgradertest.Options{
		Args: []string{"-addr", "127.0.0.1:0", "-pidfile", "{dir}/service.pid"},
		// The line the service logs once it serves: Start waits for it
		// and takes the URL from its addr field.
		Serving: "serving",
		Output:  io.Discard, // s.Logs still has every line
	})

	// Two upgrades under load: no request may fail or be re-sent.
	upgradertest.CheckUpgrades(t, s, 2, 100*time.Millisecond,
		upgradertest.LoadConfig{Clients: 4, Fresh: 0.5, Post: 0.5, Rate: 200})

	// A deploy of a binary that exits at once: the upgrade fails and the
	// old process keeps serving. The kit sees only that it was not
	// upgraded; the service's log says why.
	old := s.Pid(t)
	mark := s.Logs.Len()
	upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 3\n"), s.Bin, 0o755)
	if _, err := s.Upgrade(t, time.Second); !errors.Is(err, upgradertest.ErrNoUpgrade) {
		t.Fatalf("upgrade to a binary that exits: %v, want ErrNoUpgrade", err)
	}
	line, err := s.Logs.WaitFrom(mark, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs)
	}
	if !strings.Contains(line.Fields["err"], "exit status 3") {
		t.Errorf("the service says the upgrade failed because %q, want the new process's exit status 3", line.Fields["err"])
	}

	// The good binary again: the next upgrade works.
	s.Install(t, bin)
	pid, err := s.Upgrade(t, time.Minute)
	if err != nil || pid == old {
		t.Fatalf("upgrade after the failure: pid %d, %v", pid, err)
	}
	if upgradertest.Alive(old) {
		t.Errorf("old pid %d still running after the upgrade", old)
	}
}

// A service started with this entry in its environment (Options.Env), and
// built with -tags batonfault, has its generation-1 process reject the
// state in the first upgrade attempt.
func ExampleFault() {
	fmt.Println(upgradertest.Fault(upgradertest.FaultNewReject, 1, 1))
	// Output: BATON_FAULT=new-reject@1.1
}

// Service.Logs holds lines parsed like this one, which a test waits for
// with Logs.Wait and reads by field.
func ExampleParseLine() {
	l := upgradertest.ParseLine(`time=2026-11-25T22:19:16.587Z level=INFO msg="state restored" pid=9 bytes=49478 took=7.2ms`)
	fmt.Println(l.Msg, l.Pid, l.Fields["bytes"], l.Fields["took"])
	// Output: state restored 9 49478 7.2ms
}
