package upgrader

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// TestEventHooksContract pins what OnEvent promises: the hooks run in the
// order they were registered, every StepStarted hook has returned before
// the new process is started, and every StepChildReady hook before Exit is
// closed.
func TestEventHooksContract(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, ff := newTestUpgrader(t, Options{})
	var flipped atomic.Bool
	ff.upgrade = func() error {
		flipped.Store(true)
		ff.started <- struct{}{}
		return <-ff.result
	}
	var (
		mu    sync.Mutex
		calls []string
		early []string // steps whose hooks saw the next step already taken
	)
	for _, name := range []string{"first", "second"} {
		u.OnEvent(func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, name+" "+string(e.Step))
			if e.Step == StepStarted && flipped.Load() {
				early = append(early, "new process started before a StepStarted hook ran")
			}
			select {
			case <-u.Exit():
				early = append(early, "Exit closed before a "+string(e.Step)+" hook ran")
			default:
			}
		})
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	done := upgradeAsync(context.Background(), u)
	<-ff.started
	ff.result <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"first ready", "second ready", "first started", "second started",
		"first child-ready", "second child-ready"}
	if !slices.Equal(calls, want) {
		t.Errorf("hook calls %q, want %q", calls, want)
	}
	if len(early) > 0 {
		t.Errorf("%q", early)
	}
}
