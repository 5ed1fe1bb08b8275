package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
)

// TestSnapshotRoundTrip10k captures 10k tasks in every status, restores
// them into a fresh supervisor and checks that every field survived.
func TestSnapshotRoundTrip10k(t *testing.T) {
	const n = 10_000
	clk := newFakeClock()
	r := rand.New(rand.NewPCG(7, 7))
	tasks := make([]Task, n)
	for i := range tasks {
		id := fmt.Sprintf("task-%05d", i)
		tk := Task{ID: id, Kind: []string{"", "mail", "index"}[i%3], Version: uint32(i % 3), Run: nop}
		switch i % 5 {
		case 0: // loop that finishes
		case 1: // loop that fails
			tk.Run = func(context.Context, *Run) error { return errors.New("loop failed: " + id) }
		case 2:
			tk.Every, tk.Policy = time.Duration(1+r.IntN(10))*time.Second, CatchUp
		case 3:
			tk.Every, tk.Jitter = time.Duration(1+r.IntN(10))*time.Second, time.Second/2
		case 4:
			tk.Every = time.Duration(1+r.IntN(10)) * time.Second
			tk.Run = func(context.Context, *Run) error { return errors.New("periodic failed: " + id) }
		}
		if i%7 == 0 {
			st := make([]byte, r.IntN(100))
			for j := range st {
				st[j] = byte(r.Uint32())
			}
			inner := tk.Run
			tk.Run = func(ctx context.Context, run *Run) error {
				if err := run.Checkpoint(st); err != nil {
					return err
				}
				return inner(ctx, run)
			}
		}
		tasks[i] = tk
	}
	a, _ := newTest(t, Options{InitialBackoff: time.Second, MaxBackoff: 8 * time.Second, now: clk.Now})
	mustAdd(t, a, tasks...)
	for range 12 {
		clk.Advance(time.Second)
		stepAll(t, a, 10*n)
	}
	want := listAll(t, a)
	snap := capture(t, a)
	t.Logf("10k tasks: snapshot %d bytes", len(snap))

	b, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, b, tasks...)
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	got := listAll(t, b)
	if len(got) != n {
		t.Fatalf("%d tasks listed, want %d", len(got), n)
	}
	statuses := map[Status]int{}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("task %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
		statuses[got[i].Status]++
	}
	if statuses[StatusDone] == 0 || statuses[StatusBackoff] == 0 || statuses[StatusIdle] == 0 {
		t.Fatalf("round trip did not cover every status: %v", statuses)
	}
	for _, tk := range a.all {
		if !bytes.Equal(tk.state(), b.byID.get(b.all, tk.id).state()) {
			t.Fatalf("%s: state differs", tk.id)
		}
	}
	if sa, sb := a.Stats(), b.Stats(); sa.RunsTotal != sb.RunsTotal || sa.FailuresTotal != sb.FailuresTotal || sa.SkippedTotal != sb.SkippedTotal {
		t.Fatalf("totals: captured %+v, restored %+v", sa, sb)
	}
	// A second capture from the restored supervisor holds the same records.
	s1, err := readSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := readSnapshot(bytes.NewReader(capture(t, b)))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(mustRecords(t, s1)) != fmt.Sprint(mustRecords(t, s2)) {
		t.Fatal("records differ after a second round trip")
	}
}

func listAll(t *testing.T, s *Supervisor) []TaskInfo {
	t.Helper()
	var out []TaskInfo
	for after := ""; ; {
		page := s.List(after, 333)
		if len(page) == 0 {
			return out
		}
		for i, ti := range page {
			if ti.ID <= after || i > 0 && ti.ID <= page[i-1].ID {
				t.Fatalf("List out of order at %q", ti.ID)
			}
		}
		out = append(out, page...)
		after = page[len(page)-1].ID
	}
}

// TestOrphanKeptOneGeneration: a task that the new binary no longer
// registers is reported, written again by the next capture, adopted if it
// comes back, and dropped by the second Restore that finds it orphaned.
func TestOrphanKeptOneGeneration(t *testing.T) {
	clk := newFakeClock()
	gen0, _ := newTest(t, Options{now: clk.Now})
	saves := func(_ context.Context, r *Run) error { return r.Checkpoint([]byte("progress")) }
	mustAdd(t, gen0, Task{ID: "kept", Every: time.Second, Run: nop}, Task{ID: "gone", Every: time.Second, Kind: "k", Run: saves})
	clk.Advance(3 * time.Second)
	stepAll(t, gen0, 10)
	snap0 := capture(t, gen0)

	// gen1 does not register "gone".
	gen1, logs1 := newTest(t, Options{now: clk.Now})
	mustAdd(t, gen1, Task{ID: "kept", Every: time.Second, Run: nop})
	if err := gen1.Restore(bytes.NewReader(snap0)); err != nil {
		t.Fatal(err)
	}
	if st := gen1.Stats(); st.Orphaned != 1 || st.Tasks != 1 {
		t.Fatalf("gen1 stats %+v", st)
	}
	if l := logs1.String(); !strings.Contains(l, "not registered") || !strings.Contains(l, "task=gone") {
		t.Fatalf("orphan not reported:\n%s", l)
	}
	snap1 := capture(t, gen1)

	t.Run("rollback adopts it", func(t *testing.T) {
		back, _ := newTest(t, Options{now: clk.Now})
		mustAdd(t, back, Task{ID: "kept", Every: time.Second, Run: nop}, Task{ID: "gone", Every: time.Second, Kind: "k", Run: nop})
		if err := back.Restore(bytes.NewReader(snap1)); err != nil {
			t.Fatal(err)
		}
		if ti := info(t, back, "gone"); ti.Runs != 1 {
			t.Fatalf("gone after rollback: %+v", ti)
		}
	})

	t.Run("added after restore adopts it", func(t *testing.T) {
		late, _ := newTest(t, Options{now: clk.Now})
		if err := late.Restore(bytes.NewReader(snap0)); err != nil {
			t.Fatal(err)
		}
		if st := late.Stats(); st.Orphaned != 2 {
			t.Fatalf("orphans %d", st.Orphaned)
		}
		if err := late.Add(Task{ID: "gone", Every: time.Second, Kind: "other", Run: nop}); !errors.Is(err, ErrKindChanged) {
			t.Fatalf("adopting with another kind: %v", err)
		}
		mustAdd(t, late, Task{ID: "gone", Every: time.Second, Kind: "k", Run: nop})
		if ti := info(t, late, "gone"); ti.Runs != 1 || ti.StateBytes != len("progress") {
			t.Fatalf("adopted: %+v", ti)
		}
		if st := late.Stats(); st.Orphaned != 1 {
			t.Fatalf("orphans after adoption %d", st.Orphaned)
		}
	})

	t.Run("second generation drops it", func(t *testing.T) {
		gen2, logs2 := newTest(t, Options{now: clk.Now})
		mustAdd(t, gen2, Task{ID: "kept", Every: time.Second, Run: nop})
		if err := gen2.Restore(bytes.NewReader(snap1)); err != nil {
			t.Fatal(err)
		}
		if st := gen2.Stats(); st.Orphaned != 0 {
			t.Fatalf("gen2 still keeps %d orphans", st.Orphaned)
		}
		if l := logs2.String(); !strings.Contains(l, "dropped") || !strings.Contains(l, "task=gone") {
			t.Fatalf("drop not reported:\n%s", l)
		}
		snap2, err := readSnapshot(bytes.NewReader(capture(t, gen2)))
		if err != nil {
			t.Fatal(err)
		}
		if recs := mustRecords(t, snap2); len(recs) != 1 || string(recs[0].idb) != "kept" {
			t.Fatalf("gen2 snapshot %+v", recs)
		}
	})
}

// TestStateMigration upgrades a typed task's state schema through a
// registered migration, and checks that an unreadable version or a changed
// kind fails Restore with a clear error and changes nothing.
func TestStateMigration(t *testing.T) {
	type v1 struct{ N int }
	type v2 struct{ Count int }
	clk := newFakeClock()
	old, _ := newTest(t, Options{now: clk.Now})
	tk1 := Periodic("c", time.Second, func(_ context.Context, s *v1) error { s.N += 10; return nil })
	tk1.Kind, tk1.Version = "counter", 1
	mustAdd(t, old, tk1, Task{ID: "other", Every: time.Second, Run: nop})
	clk.Advance(time.Second)
	stepAll(t, old, 10)
	snap := capture(t, old)

	var m state.Migrations
	if err := m.Add(1, 2, func(b []byte) ([]byte, error) {
		var in v1
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, err
		}
		return json.Marshal(v2{Count: in.N})
	}); err != nil {
		t.Fatal(err)
	}
	seen := make(chan int, 1)
	newTask := func(version uint32, kind string, mig *state.Migrations) Task {
		tk := Periodic("c", time.Second, func(_ context.Context, s *v2) error {
			seen <- s.Count
			s.Count++
			return nil
		})
		tk.Kind, tk.Version, tk.Migrations = kind, version, mig
		return tk
	}

	t.Run("migrated", func(t *testing.T) {
		s, _ := newTest(t, Options{now: clk.Now})
		mustAdd(t, s, newTask(2, "counter", &m))
		if err := s.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		if ti := info(t, s, "c"); ti.StateVersion != 2 || ti.Runs != 1 {
			t.Fatalf("%+v", ti)
		}
		clk.Advance(time.Second)
		stepAll(t, s, 10)
		if got := <-seen; got != 10 {
			t.Fatalf("first run after migration saw Count %d, want 10", got)
		}
		if got := string(s.byID.get(s.all, "c").state()); got != `{"Count":11}` {
			t.Fatalf("state %s", got)
		}
	})

	tests := []struct {
		name  string
		task  Task
		is    []error
		words []string
	}{
		{name: "no migration to version 3", task: newTask(3, "counter", &m),
			is: []error{ErrStateVersion, state.ErrUnknownVersion}, words: []string{`"c"`, "version 1", "reads 3"}},
		{name: "no migrations at all", task: newTask(2, "counter", nil),
			is: []error{ErrStateVersion, state.ErrUnknownVersion}, words: []string{`"c"`, "version 1", "reads 2"}},
		{name: "downgrade", task: newTask(0, "counter", &m),
			is: []error{ErrStateVersion}, words: []string{"version 1", "reads 0"}},
		{name: "kind changed", task: newTask(1, "gauge", nil),
			is: []error{ErrKindChanged}, words: []string{`"counter"`, `"gauge"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTest(t, Options{now: clk.Now})
			mustAdd(t, s, Task{ID: "other", Every: time.Second, Run: nop}, tt.task)
			err := s.Restore(bytes.NewReader(snap))
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Fatalf("Restore = %v, want %v", err, target)
				}
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			// All or nothing: the task that could be restored was not.
			if ti := info(t, s, "other"); ti.Runs != 0 || s.Stats().RunsTotal != 0 {
				t.Fatalf("failed Restore changed state: %+v", ti)
			}
		})
	}

	t.Run("task without state needs no migration", func(t *testing.T) {
		s, _ := newTest(t, Options{now: clk.Now})
		fails := state.Migrations{}
		_ = fails.Add(0, 5, func([]byte) ([]byte, error) { return nil, errors.New("must not run") })
		mustAdd(t, s, Task{ID: "other", Kind: "renamed", Version: 5, Migrations: &fails, Every: time.Second, Run: nop})
		if err := s.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		if ti := info(t, s, "other"); ti.Runs != 1 {
			t.Fatalf("%+v", ti)
		}
	})

	t.Run("undecodable state", func(t *testing.T) {
		s, _ := newTest(t, Options{now: clk.Now})
		var bad state.Migrations
		_ = bad.Add(1, 2, func([]byte) ([]byte, error) { return []byte("not json"), nil })
		mustAdd(t, s, newTask(2, "counter", &bad))
		if err := s.Restore(bytes.NewReader(snap)); !errors.Is(err, ErrBadState) {
			t.Fatalf("Restore = %v, want ErrBadState", err)
		}
	})
}

func smallSnapshot(t *testing.T) []byte {
	t.Helper()
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	for i := range 20 {
		mustAdd(t, s, Task{ID: "t" + itoa(i), Kind: "k", Every: time.Second, Run: func(_ context.Context, r *Run) error {
			if i%3 == 0 {
				return errors.New("failed")
			}
			return r.Checkpoint([]byte("state of " + r.ID()))
		}})
	}
	clk.Advance(time.Second)
	stepAll(t, s, 100)
	return capture(t, s)
}

// TestCorruptSnapshot restores every truncation and every single-byte
// corruption of a snapshot: each must fail with ErrCorrupt, not panic and
// not succeed.
func TestCorruptSnapshot(t *testing.T) {
	snap := smallSnapshot(t)
	if _, err := parseSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	for n := range len(snap) {
		if _, err := parseSnapshot(bytes.NewReader(snap[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d of %d: %v", n, len(snap), err)
		}
	}
	for i := range snap {
		bad := bytes.Clone(snap)
		bad[i] ^= 0x20
		if _, err := parseSnapshot(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	// Through the public method too, with a registered task.
	s, _ := newTest(t, Options{})
	mustAdd(t, s, Task{ID: "t1", Every: time.Second, Run: nop})
	if err := s.Restore(bytes.NewReader(snap[:len(snap)/2])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Restore(truncated) = %v", err)
	}
	if err := s.Restore(strings.NewReader("garbage")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Restore(garbage) = %v", err)
	}
}

// TestSnapshotSelfDelimiting checks that Restore reads nothing past the
// snapshot, so it can share a stream with other sections.
func TestSnapshotSelfDelimiting(t *testing.T) {
	snap := smallSnapshot(t)
	r := io.MultiReader(bytes.NewReader(snap), strings.NewReader("NEXT SECTION"))
	if _, err := readSnapshot(r); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "NEXT SECTION" {
		t.Fatalf("left %q", rest)
	}
}

// TestCaptureWriteError checks that a failing writer is reported.
func TestCaptureWriteError(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustAdd(t, s, Task{ID: "a", Every: time.Second, Run: nop})
	boom := errors.New("disk full")
	for limit := range 12 {
		if err := s.Capture(&failWriter{n: limit, err: boom}); !errors.Is(err, boom) {
			t.Fatalf("limit %d: Capture = %v", limit, err)
		}
	}
}

type failWriter struct {
	n   int
	err error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return w.n, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

func FuzzReadSnapshot(f *testing.F) {
	f.Add(snapshotMagic[:])
	f.Add(append(snapshotMagic[:], 0))
	f.Add([]byte("BWK\x01\x05hello\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		snap, err := readSnapshot(bytes.NewReader(b))
		if err == nil && snap == nil {
			t.Fatal("nil snapshot without error")
		}
		if err == nil {
			snap.records() // must not panic, whatever the records say
		}
	})
}

// mustRecords parses every record of snap.
func mustRecords(t *testing.T, snap *snapshot) []record {
	t.Helper()
	recs, err := snap.records()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// parseSnapshot reads a snapshot and parses its records, as Restore does.
func parseSnapshot(r io.Reader) ([]record, error) {
	snap, err := readSnapshot(r)
	if err != nil {
		return nil, err
	}
	return snap.records()
}

// TestOrphanWithPendingRunsSurvivesCapture: a data task of OverlapAllow
// whose run was in flight at the capture has pending runs in its record;
// restored where its kind is not registered, it is an orphan, and the
// next Capture writes its record as it is, pending runs included. That
// snapshot must say format 3, or the next Restore misreads every record
// after it. (Found by TestPreCopyEquivalence: it failed with "corrupt
// snapshot: record 86: length ... out of range" before the fix.)
func TestOrphanWithPendingRunsSurvivesCapture(t *testing.T) {
	clk := newFakeClock()
	a, _ := newTest(t, Options{now: clk.Now})
	if err := a.RegisterKind(Kind{Name: "k.x", Run: nop}); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, a, Task{ID: "allow", Kind: "k.x", Every: time.Second, Overlap: OverlapAllow},
		Task{ID: "after", Kind: "k.x", Every: time.Second, Args: []byte("after")})
	clk.Advance(time.Second)
	a.mu.Lock()
	for a.q.len() > 0 { // dispatch the due runs and leave them in flight
		if tk := a.q.pop(a.all); a.runnableLocked(tk) && tk.id == "allow" {
			a.dispatchLocked(tk)
			break
		}
	}
	a.mu.Unlock()
	snap := capture(t, a)

	b, _ := newTest(t, Options{now: clk.Now}) // no k.x: both are orphans
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Orphans()); n != 2 {
		t.Fatalf("%d orphans, want 2", n)
	}
	c, _ := newTest(t, Options{now: clk.Now})
	if err := c.RegisterKind(Kind{Name: "k.x", Run: nop}); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(bytes.NewReader(capture(t, b))); err != nil {
		t.Fatalf("Restore of the snapshot holding the orphans: %v", err)
	}
	if ti := info(t, c, "allow"); ti.Pending != 1 {
		t.Errorf("allow: %d pending runs, want the one in flight at the capture", ti.Pending)
	}
	if ti := info(t, c, "after"); ti.Kind != "k.x" {
		t.Errorf("after: %+v", ti)
	}
}
