package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// gatedRuns is the body of an OverlapAllow task whose runs block until
// released, recording what each saw.
type gatedRuns struct {
	mu       sync.Mutex
	started  []uint64 // seqs, in start order
	dups     map[uint64]bool
	finished []uint64
	inflight int
	most     int // the most runs seen in flight at once
	gates    map[uint64]chan struct{}
	started1 chan uint64 // each start's seq
	open     bool        // runs return at once
}

func newGatedRuns() *gatedRuns {
	return &gatedRuns{dups: make(map[uint64]bool), gates: make(map[uint64]chan struct{}), started1: make(chan uint64, 1024)}
}

func (g *gatedRuns) gate(seq uint64) chan struct{} {
	if g.gates[seq] == nil {
		g.gates[seq] = make(chan struct{})
	}
	return g.gates[seq]
}

func (g *gatedRuns) run(ctx context.Context, r *Run) error {
	seq := r.Seq()
	g.mu.Lock()
	g.started = append(g.started, seq)
	g.dups[seq] = r.MaybeDuplicate()
	g.inflight++
	g.most = max(g.most, g.inflight)
	gate, open := g.gate(seq), g.open
	g.mu.Unlock()
	g.started1 <- seq
	var err error
	if !open {
		select {
		case <-gate:
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	g.mu.Lock()
	g.inflight--
	if err == nil {
		g.finished = append(g.finished, seq)
	}
	g.mu.Unlock()
	return err
}

// release lets run seq return.
func (g *gatedRuns) release(seq uint64) {
	g.mu.Lock()
	close(g.gate(seq))
	g.mu.Unlock()
}

// openAll makes every run return at once, those waiting included.
func (g *gatedRuns) openAll() {
	g.mu.Lock()
	g.open = true
	for seq, c := range g.gates {
		select {
		case <-c:
		default:
			close(c)
		}
		delete(g.gates, seq)
	}
	g.mu.Unlock()
}

func (g *gatedRuns) snapshot() (started, finished []uint64, most int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.started), slices.Clone(g.finished), g.most
}

func waitStarts(t *testing.T, g *gatedRuns, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		seqs = append(seqs, waitFor(t, g.started1, "a run to start"))
	}
	return seqs
}

func sorted(s []uint64) []uint64 {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// noMoreStarts fails if a run starts within d.
func noMoreStarts(t *testing.T, g *gatedRuns, d time.Duration) {
	t.Helper()
	select {
	case seq := <-g.started1:
		t.Fatalf("run %d started beyond the bound", seq)
	case <-time.After(d):
	}
}

// TestOverlapAllowBounded: points that come due while runs are in flight
// start runs of their own, up to MaxConcurrent; at the bound they wait,
// and runs ending out of order keep the numbers unique.
func TestOverlapAllowBounded(t *testing.T) {
	s, _ := newTest(t, Options{})
	g := newGatedRuns()
	mustAdd(t, s, Task{ID: "a", Every: 5 * time.Millisecond, Overlap: OverlapAllow, MaxConcurrent: 3, Run: g.run})
	start(t, s)
	if got := waitStarts(t, g, 3); !slices.Equal(sorted(got), []uint64{1, 2, 3}) {
		t.Fatalf("first runs %v, want 1 2 3 in flight together", got)
	}
	noMoreStarts(t, g, 50*time.Millisecond) // ten points came due
	if ti := info(t, s, "a"); ti.InFlight != 3 || ti.Status != StatusRunning || ti.Runs != 0 {
		t.Fatalf("info %+v, want 3 in flight, running, 0 runs", ti)
	}
	g.release(2) // out of order: 2 before 1
	if seq := waitStarts(t, g, 1)[0]; seq != 4 {
		t.Fatalf("after run 2 ended, run %d started, want 4", seq)
	}
	if ti := info(t, s, "a"); ti.Runs != 1 {
		t.Fatalf("runs %d after one ended, want 1", ti.Runs)
	}
	g.openAll()
	deadline := time.Now().Add(10 * time.Second)
	for info(t, s, "a").Runs < 40 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	started, _, most := g.snapshot()
	if most != 3 {
		t.Errorf("at most %d runs in flight, want 3", most)
	}
	checkConsecutive(t, "a", sorted(started))
	if st := s.Stats(); st.RunsTotal < 40 {
		t.Errorf("RunsTotal %d", st.RunsTotal)
	}
}

// TestOverlapAllowCutOffMovesOn: runs in flight when the freeze bound cuts
// them off are listed in the snapshot, format 3, and the next process runs
// them again under their numbers, marked as possible duplicates, before
// new ones; a Thaw does the same in the old process.
func TestOverlapAllowCutOffMovesOn(t *testing.T) {
	old, _ := newTest(t, Options{FreezeTimeout: 20 * time.Millisecond})
	g := newGatedRuns()
	task := func(run RunFunc) Task {
		return Task{ID: "a", Every: 5 * time.Millisecond, Overlap: OverlapAllow, MaxConcurrent: 3, Run: run}
	}
	mustAdd(t, old, task(g.run))
	start(t, old)
	waitStarts(t, g, 3)
	g.release(1)
	waitStarts(t, g, 1) // 4: now 2, 3, 4 in flight, 1 counted
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := capture(t, old)
	if snap[3] != formatPending {
		t.Fatalf("snapshot format %d, want %d with pending runs", snap[3], formatPending)
	}

	next, _ := newTest(t, Options{})
	h := newGatedRuns()
	h.open = true
	mustAdd(t, next, task(h.run))
	if err := next.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if ti := info(t, next, "a"); ti.Pending != 3 || !ti.MaybeDuplicate || ti.Runs != 1 {
		t.Fatalf("restored %+v, want 3 pending, maybe duplicate, 1 run", ti)
	}
	start(t, next)
	// Runners start in any order: look at the numbers, not the order.
	got := waitStarts(t, h, 6)
	slices.Sort(got)
	if !slices.Equal(got, []uint64{2, 3, 4, 5, 6, 7}) {
		t.Fatalf("the next process ran %v, want the cut-off 2 3 4, then 5 6 7", got)
	}
	h.mu.Lock()
	for seq, dup := range h.dups {
		if dup != (seq >= 2 && seq <= 4) {
			t.Errorf("run %d: MaybeDuplicate %v", seq, dup)
		}
	}
	h.mu.Unlock()

	// The upgrade abandoned instead: the old process runs them again.
	g.openAll()
	old.Thaw()
	if again := sorted(waitStarts(t, g, 4)); !slices.Equal(again, []uint64{2, 3, 4, 5}) {
		t.Fatalf("after Thaw the old process ran %v, want 2 3 4 again, then 5", again)
	}
}

// TestOverlapAllowSnapshotCompat: without pending runs the snapshot keeps
// format 2, which the releases before OverlapAllow read; damaged pending
// lists are refused.
func TestOverlapAllowSnapshotCompat(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustAdd(t, s, Task{ID: "a", Every: time.Hour, Overlap: OverlapAllow, Run: nop})
	if snap := capture(t, s); snap[3] != SnapshotVersion {
		t.Fatalf("format %d without pending runs, want %d", snap[3], SnapshotVersion)
	}
	for _, c := range []struct {
		name    string
		runs    uint64
		pending []uint64
	}{
		{"empty", 3, nil},
		{"zero seq", 3, []uint64{0}},
		{"beyond runs+count", 3, []uint64{5 << 1}},
		{"not ascending", 3, []uint64{5 << 1, 4 << 1}},
		{"repeated", 3, []uint64{4 << 1, 4 << 1}},
	} {
		r := record{id: "a", flags: flagPending, runs: c.runs, pending: c.pending}
		b := rawSnapshot(formatPending, r)
		if _, err := parseSnapshot(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: parseSnapshot = %v, want ErrCorrupt", c.name, err)
		}
	}
	good := rawSnapshot(formatPending, record{id: "a", flags: flagPending, runs: 3, pending: []uint64{4<<1 | 1, 5 << 1}})
	recs, err := parseSnapshot(bytes.NewReader(good))
	if err != nil || !slices.Equal(recs[0].pending, []uint64{9, 10}) {
		t.Fatalf("parseSnapshot = %v, %v", recs, err)
	}
	// Format 2 has no pending field: the flag alone is ignored.
	if _, err := parseSnapshot(bytes.NewReader(rawSnapshot(2, record{id: "a", flags: flagPending}))); err != nil {
		t.Fatalf("format 2: %v", err)
	}
}

// rawSnapshot frames records as Capture does, at format version v (the
// pending lists are written whatever they hold).
func rawSnapshot(v byte, recs ...record) []byte {
	var buf bytes.Buffer
	buf.Write([]byte{'B', 'W', 'K', v})
	cw := chunkWriter{w: &buf}
	cw.buf = binary.AppendVarint(cw.buf, 1)
	cw.buf = binary.AppendVarint(cw.buf, 0)
	for range 5 {
		cw.buf = binary.AppendUvarint(cw.buf, 0)
	}
	cw.buf = binary.AppendUvarint(cw.buf, uint64(len(recs)))
	cw.flush()
	for i := range recs {
		r := recs[i]
		if v < formatPending {
			r.flags &^= flagPending
		}
		cw.buf = appendRecord(cw.buf, &r)
	}
	cw.flush()
	buf.WriteByte(0)
	return buf.Bytes()
}

// TestOverlapAllowValidation: allow needs a periodic schedule and a bound
// in range; the bound is for allow only.
func TestOverlapAllowValidation(t *testing.T) {
	s, _ := newTest(t, Options{})
	for _, tk := range []Task{
		{ID: "loop", Overlap: OverlapAllow, Run: nop},
		{ID: "once", At: time.Now(), Overlap: OverlapAllow, Run: nop},
		{ID: "one", Every: time.Second, Overlap: OverlapAllow, MaxConcurrent: 1, Run: nop},
		{ID: "many", Every: time.Second, Overlap: OverlapAllow, MaxConcurrent: MaxConcurrentLimit + 1, Run: nop},
		{ID: "queue", Every: time.Second, MaxConcurrent: 3, Run: nop},
		{ID: "unknown", Every: time.Second, Overlap: OverlapAllow + 1, Run: nop},
	} {
		if err := s.Add(tk); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("Add(%s) = %v, want ErrInvalidTask", tk.ID, err)
		}
	}
	mustAdd(t, s, Task{ID: "cron", Cron: "* * * * * *", Overlap: OverlapAllow, Run: nop})
	if got := s.byID.get(s.all, "cron").spec.MaxConcurrent; got != DefaultMaxConcurrent {
		t.Errorf("default bound %d, want %d", got, DefaultMaxConcurrent)
	}
}

// TestOverlapAllowRemoveHoldsReAdd: a removed task's runs finish in the
// background; the task added again under its ID starts once all of them
// have ended, numbered from 1.
func TestOverlapAllowRemoveHoldsReAdd(t *testing.T) {
	s, _ := newTest(t, Options{})
	g := newGatedRuns()
	tk := Task{ID: "a", Every: 5 * time.Millisecond, Overlap: OverlapAllow, MaxConcurrent: 2, Run: g.run}
	mustAdd(t, s, tk)
	start(t, s)
	waitStarts(t, g, 2)
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	h := newGatedRuns()
	h.open = true
	tk.Run = h.run
	mustAdd(t, s, tk)
	g.release(1)
	noMoreStarts(t, h, 50*time.Millisecond)
	g.release(2)
	if seq := waitStarts(t, h, 1)[0]; seq != 1 {
		t.Fatalf("re-added task's first run is %d, want 1", seq)
	}
	if st := s.Stats(); st.ByStatus[StatusRunning] > 1 {
		t.Errorf("status counts %v", st.ByStatus)
	}
}

// TestOverlapAllowPauseRunNow: a paused task starts no run while its runs
// in flight end; RunNow starts one at once below the bound, without
// moving the schedule.
func TestOverlapAllowPauseRunNow(t *testing.T) {
	s, _ := newTest(t, Options{})
	g := newGatedRuns()
	mustAdd(t, s, Task{ID: "a", Every: time.Hour, Overlap: OverlapAllow, MaxConcurrent: 2, Run: g.run})
	start(t, s)
	if err := s.RunNow("a"); err != nil {
		t.Fatal(err)
	}
	waitStarts(t, g, 1)
	next := info(t, s, "a").Next
	if err := s.RunNow("a"); err != nil {
		t.Fatal(err)
	}
	waitStarts(t, g, 1) // below the bound: at once, concurrently
	if err := s.RunNow("a"); err != nil {
		t.Fatal(err)
	}
	noMoreStarts(t, g, 30*time.Millisecond) // at the bound
	if err := s.Pause("a"); err != nil {
		t.Fatal(err)
	}
	g.release(1)
	if seq := waitStarts(t, g, 1)[0]; seq != 3 {
		t.Fatalf("the asked-for run is %d, want 3", seq) // RunNow beats the pause
	}
	g.release(2)
	g.release(3)
	noMoreStarts(t, g, 30*time.Millisecond)
	ti := info(t, s, "a")
	if ti.Status != StatusPaused || ti.Runs != 3 || ti.InFlight != 0 {
		t.Fatalf("after the runs %+v, want paused with 3 runs", ti)
	}
	if err := s.Resume("a"); err != nil {
		t.Fatal(err)
	}
	if got := info(t, s, "a").Next; got.Sub(next).Abs() > time.Millisecond {
		t.Errorf("next run moved from %v to %v", next, got)
	}
}

// TestOverlapAllowTypedState: concurrent runs of a typed task each see
// the state checkpointed when they started (a value of its own: the race
// detector sees nothing shared); the last writer wins.
func TestOverlapAllowTypedState(t *testing.T) {
	s, _ := newTest(t, Options{})
	type counter struct{ N int }
	var mu sync.Mutex
	seen := 0
	release := make(chan struct{})
	tk := Periodic("typed", 2*time.Millisecond, func(ctx context.Context, st *counter) error {
		mu.Lock()
		seen++
		n := seen
		mu.Unlock()
		if n <= 3 {
			<-release
		}
		st.N++
		return nil
	})
	tk.Overlap, tk.MaxConcurrent = OverlapAllow, 3
	mustAdd(t, s, tk)
	start(t, s)
	for {
		mu.Lock()
		n := seen
		mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for info(t, s, "typed").Runs < 20 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Thaw()
	ti := info(t, s, "typed")
	s.mu.Lock()
	var st counter
	err := codecFor[counter]().unmarshal(s.byID.get(s.all, "typed").state(), &st)
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// The three first runs all started from N=0 and wrote 1, and later
	// runs that overlapped lost writes too: N lags the run count by at
	// least two, and never passes it.
	if st.N < 1 || uint64(st.N) > ti.Runs-2 {
		t.Errorf("state N=%d after %d runs, want within [1, runs-2]", st.N, ti.Runs)
	}
}
