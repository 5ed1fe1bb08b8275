package state

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lateValue returns a Value registered as section "app", logging to log.
func lateValue(t *testing.T, log *bytes.Buffer) (*Value[appState], *Registry) {
	t.Helper()
	v := &Value[appState]{Logger: slog.New(slog.NewTextHandler(log, nil))}
	v.Store(appState{Counter: 1})
	return v, newRegistryWith(t, v.JSON("app", 1))
}

func TestValueCountsWritesAfterCapture(t *testing.T) {
	var log bytes.Buffer
	v, reg := lateValue(t, &log)
	v.Update(func(s *appState) { s.Counter++ }) // before the capture: carried
	if n := v.LateWrites(); n != 0 {
		t.Fatalf("LateWrites before any capture = %d, want 0", n)
	}
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := snapshotOf(t, reg)

	// The drain: handlers still write. These writes are not in snap.
	for i := range 5 {
		v.Update(func(s *appState) { s.Counter = 100 + i })
	}
	v.Store(appState{Counter: 7})
	if n := v.LateWrites(); n != 6 {
		t.Errorf("LateWrites after 6 writes past the capture = %d, want 6", n)
	}
	// The writes still apply in this process, which is still serving.
	if got := v.Load().Counter; got != 7 {
		t.Errorf("Load = %d, want 7", got)
	}
	// Logged, but not once per write: at the 1st, 2nd and 4th.
	if got := strings.Count(log.String(), "written after its capture"); got != 3 {
		t.Errorf("%d log lines about late writes, want 3:\n%s", got, log.String())
	}
	if !strings.Contains(log.String(), "section=app") || !strings.Contains(log.String(), "late_writes=4") {
		t.Errorf("the log does not name the section and the count:\n%s", log.String())
	}

	// The new process gets what was captured, without the late writes.
	dst := restoredValue(t, snap)
	if got := dst.Load().Counter; got != 2 {
		t.Errorf("restored Counter = %d, want 2 (the value at the capture)", got)
	}
	if n := dst.LateWrites(); n != 0 {
		t.Errorf("LateWrites in the new process = %d, want 0", n)
	}
	dst.Store(appState{})
	if n := dst.LateWrites(); n != 0 {
		t.Errorf("a write in the new process counted as late: %d", n)
	}
}

func TestValueThawEndsLateWrites(t *testing.T) {
	var log bytes.Buffer
	v, reg := lateValue(t, &log)
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snapshotOf(t, reg)
	v.Store(appState{Counter: 2})
	if n := v.LateWrites(); n != 1 {
		t.Fatalf("LateWrites = %d, want 1", n)
	}
	// The handoff was aborted: this process carries on, and its next
	// capture will hold every write. Nothing is lost any more.
	if err := reg.Thaw(); err != nil {
		t.Fatal(err)
	}
	if n := v.LateWrites(); n != 0 {
		t.Errorf("LateWrites after Thaw = %d, want 0", n)
	}
	v.Store(appState{Counter: 3})
	if n := v.LateWrites(); n != 0 {
		t.Errorf("a write after Thaw counted as late: %d", n)
	}
	// A new capture starts a new count.
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snapshotOf(t, reg)
	v.Store(appState{Counter: 4})
	if n := v.LateWrites(); n != 1 {
		t.Errorf("LateWrites after the second capture = %d, want 1", n)
	}
}

func TestValueConcurrentWrites(t *testing.T) {
	// Writers race the capture (run with -race): every write is either in
	// the snapshot or counted late, never both, never neither.
	var log bytes.Buffer
	v, reg := lateValue(t, &log)
	v.Store(appState{})
	var wg sync.WaitGroup
	const writers, each = 4, 200
	for range writers {
		wg.Go(func() {
			for range each {
				v.Update(func(s *appState) { s.Counter++ })
			}
		})
	}
	snap := snapshotOf(t, reg)
	wg.Wait()
	dst := restoredValue(t, snap)
	if got := uint64(dst.Load().Counter) + v.LateWrites(); got != writers*each {
		t.Errorf("captured %d + late %d = %d writes, want %d", dst.Load().Counter, v.LateWrites(), got, writers*each)
	}
}

// restoredValue returns a new Value restored from section "app" of snap.
func restoredValue(t *testing.T, snap []byte) *Value[appState] {
	t.Helper()
	dst := &Value[appState]{}
	if _, err := newRegistryWith(t, dst.JSON("app", 1)).ReadSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	return dst
}
