package tests

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// standardLoad is the load the issue names: 32 clients at 2000 requests/s,
// half on fresh connections, GET and POST.
func standardLoad(url string) upgradertest.LoadConfig {
	return upgradertest.LoadConfig{URL: url, Clients: 32, Fresh: 0.5, Post: 0.5, Rate: 2000}
}

// underLoad runs f while the load runs, then stops the load and returns
// what the clients saw.
func underLoad(t *testing.T, cfg upgradertest.LoadConfig, f func()) *upgradertest.LoadReport {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *upgradertest.LoadReport)
	go func() { done <- upgradertest.RunLoad(ctx, cfg) }()
	defer func() {
		if cancel != nil {
			cancel()
			<-done
		}
	}()
	f()
	cancel()
	r := <-done
	cancel = nil
	t.Logf("load: %s", r)
	return r
}

func assertNoFailures(t *testing.T, r *upgradertest.LoadReport) {
	t.Helper()
	if r.Requests == 0 {
		t.Fatal("the load sent no requests")
	}
	if r.Failed() != 0 || r.Retried != 0 {
		t.Errorf("clients saw %d failed and %d silently retried requests of %d: %v %q",
			r.Failed(), r.Retried, r.Requests, r.Failures, r.Errors)
	}
}

// nextGeneration runs upgrade i of p and waits for the old process to
// exit. It fails the test if the upgrade failed, if the old process stays
// or, with pids, if the new pid is one of pids (replies are told apart by
// pid), and adds the new pid to pids.
func nextGeneration(t *testing.T, p *demotest.Proc, i int, pids map[int]bool) demotest.Upgrade {
	t.Helper()
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade %d failed: %s\n%s", i, u.Err, p.Logs.Tail(40))
	}
	if pids != nil {
		if pids[u.NewPid] {
			t.Fatalf("upgrade %d: pid %d reused", i, u.NewPid)
		}
		pids[u.NewPid] = true
	}
	if err := upgradertest.WaitExit(u.OldPid, 15*time.Second); err != nil {
		t.Fatalf("upgrade %d: old process: %v", i, err)
	}
	return u
}

func TestUpgradesUnderLoad(t *testing.T) {
	const upgrades = 50
	p := demotest.Start(t, demoV1, "-drain", "10s")
	var serving []time.Duration
	pids := map[int]bool{p.Pid(t): true}
	r := underLoad(t, standardLoad(p.URL), func() {
		// Upgrades 150 ms apart, so the load crosses every window.
		next := time.NewTicker(150 * time.Millisecond)
		defer next.Stop()
		for i := 0; i < upgrades; i++ {
			<-next.C
			u := nextGeneration(t, p, i, pids)
			serving = append(serving, u.Serving)
		}
	})
	assertNoFailures(t, r)
	assertStateIntact(t, p, r, upgrades)
	for pid := range r.Pids {
		if !pids[pid] {
			t.Errorf("a reply came from pid %d, which is no generation of the service", pid)
		}
	}
	if len(r.Pids) < upgrades {
		t.Errorf("replies came from %d generations; want every one of the %d", len(r.Pids), upgrades+1)
	}
	slices.Sort(serving)
	t.Logf("signal -> new process serving over %d upgrades: median %v, min %v, max %v",
		len(serving), serving[len(serving)/2], serving[0], serving[len(serving)-1])
}

func TestReplacedBinaryIsPickedUp(t *testing.T) {
	p := demotest.Start(t, demoV1)
	if got := p.Root(t); got.Version != "v1" || got.Generation != 0 {
		t.Fatalf("before: %+v, want v1 generation 0", got)
	}
	upgradertest.Install(t, demoV2, p.Bin)
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatal(u.Err)
	}
	got := p.Root(t)
	if got.Version != "v2" || got.Generation != 1 || got.Pid != u.NewPid {
		t.Fatalf("after: %+v, want v2 generation 1 pid %d", got, u.NewPid)
	}
}

func TestFailedUpgradesKeepServing(t *testing.T) {
	tests := []struct {
		name    string
		install func(t *testing.T, path string)
		args    []string
		wantErr string
	}{
		{
			name: "new binary exits at start",
			install: func(t *testing.T, path string) {
				upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 3\n"), path, 0o755)
			},
			wantErr: "exit status 3",
		},
		{
			name: "new binary never becomes ready",
			install: func(t *testing.T, path string) {
				upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexec sleep 30\n"), path, 0o755)
			},
			args:    []string{"-upgrade-timeout", "500ms"},
			wantErr: "not ready in time",
		},
		{
			name: "file is not executable",
			install: func(t *testing.T, path string) {
				upgradertest.InstallBytes(t, []byte("#!/bin/sh\nexit 0\n"), path, 0o644)
			},
			wantErr: "could not be started",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demotest.Start(t, demoV1, tt.args...)
			first := p.Pid(t)
			r := underLoad(t, standardLoad(p.URL), func() {
				tt.install(t, p.Bin)
				u := p.Upgrade(t)
				if u.Err == "" {
					t.Fatalf("upgrade to a broken binary succeeded: new pid %d", u.NewPid)
				}
				if !strings.Contains(u.Err, tt.wantErr) {
					t.Errorf("error %q does not say %q", u.Err, tt.wantErr)
				}
				if got := p.Root(t); got.Pid != first {
					t.Fatalf("after the failure pid %d serves, want the old %d", got.Pid, first)
				}
				upgradertest.Install(t, demoV2, p.Bin)
				u = p.Upgrade(t)
				if u.Err != "" {
					t.Fatalf("good upgrade after the failure: %s", u.Err)
				}
				if err := upgradertest.WaitExit(first, 15*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			assertNoFailures(t, r)
		})
	}
}
