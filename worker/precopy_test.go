package worker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// wallNow is the real clock without its monotonic reading, so that the
// supervisor's monotonic times convert to the same wall-clock times in
// every slice of a first round and in the delta.
func wallNow() time.Time { return time.Now().Round(0) }

// smallSlices makes the first round encode n tasks per hold of the lock,
// so that small tests have many slices.
func smallSlices(t *testing.T, n int) {
	t.Helper()
	saved := preCopySliceTasks
	preCopySliceTasks = n
	t.Cleanup(func() { preCopySliceTasks = saved })
}

// opWriter is the writer of a first round: before each chunk reaches buf
// it calls op, which changes the supervisor between two slices.
type opWriter struct {
	buf bytes.Buffer
	op  func()
}

func (w *opWriter) Write(p []byte) (int, error) {
	if w.op != nil {
		w.op()
	}
	return w.buf.Write(p)
}

// failsAt says whether run seq of task id fails: one in four, by hash.
func failsAt(id string, seq uint64) bool {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", id, seq)
	return h.Sum32()%4 == 0
}

// eqWorld is the tasks of one equivalence scenario.
type eqWorld struct {
	rng *rand.Rand
	// reg are the tasks registered by ID in the new processes.
	reg  []Task
	ids  []string // every ID the old process may know, for the ops
	late []Task   // tasks the ops may add
}

func (w *eqWorld) pick() string { return w.ids[w.rng.IntN(len(w.ids))] }

// eqBody is the run function of most tasks of the scenario: it checkpoints
// its sequence number, fails one run in four, and some runs take long
// (an OverlapAllow task's overlap, and cut-offs at the freeze bound).
func eqBody(slow bool) RunFunc {
	return func(ctx context.Context, r *Run) error {
		if err := r.Checkpoint(fmt.Appendf(nil, "%s:%d", r.ID(), r.Seq())); err != nil {
			return err
		}
		if slow {
			d := time.Duration(r.Seq()%5) * 9 * time.Millisecond
			time.Sleep(d) // ignores ctx: the freeze bound may cut it off
		}
		if failsAt(r.ID(), r.Seq()) {
			return errors.New("planned failure")
		}
		return nil
	}
}

// eqStuck is the body of a task whose first runs, and the runs again of
// runs cut off, outlast a round: in flight from before the first round to
// after the freeze bound, checkpointing in between.
func eqStuck(ctx context.Context, r *Run) error {
	if r.Seq() > 2 && !r.MaybeDuplicate() {
		return nil
	}
	time.Sleep(20 * time.Millisecond)
	if err := r.Checkpoint(fmt.Appendf(nil, "stuck:%d", r.Seq())); err != nil {
		return err
	}
	time.Sleep(40 * time.Millisecond)
	return nil
}

func eqLoop(ctx context.Context, r *Run) error {
	n := len(r.State())
	for i := 0; ; i++ {
		if err := r.Checkpoint(bytes.Repeat([]byte{'x'}, n%50+1)); err != nil {
			return err
		}
		n++
		if strings.HasSuffix(r.ID(), "-ends") && n > 5 {
			return nil // done
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// newEqWorld builds the scenario of seed: its old supervisor, running,
// with orphans from an earlier snapshot.
func newEqWorld(t *testing.T, seed uint64) (*eqWorld, *Supervisor) {
	t.Helper()
	w := &eqWorld{rng: rand.New(rand.NewPCG(seed, 17))}
	rng := w.rng
	now := wallNow()
	kinds := func(s *Supervisor, names ...string) {
		for _, k := range names {
			if err := s.RegisterKind(Kind{Name: k, Version: 1, Run: eqBody(false)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An earlier process, for orphans: tasks by ID that the old one does
	// not register, and data of a kind it does not know.
	s0, _ := newTest(t, Options{now: wallNow})
	kinds(s0, "k.gone")
	for i := range 4 {
		mustAdd(t, s0, Task{ID: fmt.Sprint("orph-reg-", i), Kind: "reg", Version: 1, Every: time.Hour, Run: nop},
			Task{ID: fmt.Sprint("orph-data-", i), Kind: "k.gone", Every: time.Hour, Args: []byte{byte(i)}})
	}
	if err := s0.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap0 := capture(t, s0)

	old, _ := newTest(t, Options{now: wallNow, Workers: 4, FreezeTimeout: 25 * time.Millisecond,
		InitialBackoff: 3 * time.Millisecond, MaxBackoff: 12 * time.Millisecond})
	kinds(old, "k.data", "k.lost")
	every := func() time.Duration { return time.Duration(3+rng.IntN(12)) * time.Millisecond }
	for i := range 40 {
		id := fmt.Sprint("reg-", i)
		tk := Task{ID: id, Kind: "reg", Version: 1, Every: every(), Policy: Policy(rng.IntN(3)), Run: eqBody(false)}
		switch i % 8 {
		case 0:
			tk.Run = eqStuck
			if i%16 == 8 {
				tk.Overlap, tk.MaxConcurrent = OverlapAllow, 2
			}
		case 1:
			tk.Overlap, tk.MaxConcurrent, tk.Run = OverlapAllow, 3, eqBody(true)
		case 2:
			tk.Every, tk.Policy, tk.Run = 0, SkipLate, eqLoop
			if i%16 == 2 {
				tk.ID += "-ends"
			}
		case 3:
			tk.Paused = true
		case 4:
			tk.End = now.Add(time.Duration(rng.IntN(40)) * time.Millisecond)
		case 5:
			tk.Every, tk.Policy = 0, SkipLate
			tk.At = now.Add(time.Duration(rng.IntN(60)) * time.Millisecond)
		case 6:
			tk.Run = eqBody(true)
		}
		mustAdd(t, old, tk)
		if i%10 != 7 { // the others are not registered in the new process
			w.reg = append(w.reg, tk)
		}
		w.ids = append(w.ids, tk.ID)
	}
	for i := range 40 {
		kind := "k.data"
		if i%5 == 4 {
			kind = "k.lost" // an orphan in the new process
		}
		tk := Task{ID: fmt.Sprint("data-", i), Kind: kind, Every: every(), Jitter: time.Millisecond,
			Paused: i%9 == 3, Args: []byte(fmt.Sprint("args-", i))}
		if i%7 == 1 {
			tk.Overlap, tk.MaxConcurrent = OverlapAllow, 2
		}
		mustAdd(t, old, tk)
		w.ids = append(w.ids, tk.ID)
	}
	if err := old.Restore(bytes.NewReader(snap0)); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		w.ids = append(w.ids, fmt.Sprint("orph-reg-", i), fmt.Sprint("orph-data-", i))
		// Adopted if the ops add it: registered in the new process too.
		w.late = append(w.late, Task{ID: fmt.Sprint("orph-reg-", i), Kind: "reg", Version: 1, Every: every(), Run: eqBody(false)})
	}
	for i := range 12 {
		id := fmt.Sprint("late-", i)
		w.late = append(w.late, Task{ID: id, Kind: "reg", Version: 1, Every: every(), Run: eqBody(false)},
			Task{ID: "late-data-" + fmt.Sprint(i), Kind: "k.data", Every: every(), Args: []byte{byte(i)}})
		w.ids = append(w.ids, id, "late-data-"+fmt.Sprint(i))
	}
	// Re-adding a removed data task under a new spec.
	for i := range 6 {
		w.late = append(w.late, Task{ID: fmt.Sprint("data-", i), Kind: "k.data", Every: every() + time.Millisecond})
	}
	for _, tk := range w.late {
		if tk.Run != nil {
			w.reg = append(w.reg, tk)
		}
	}
	start(t, old)
	return w, old
}

// op does one random change to old, as an application would while the
// first round runs. Errors (unknown task, done, duplicate) are expected.
func (w *eqWorld) op(old *Supervisor) {
	switch k := w.rng.IntN(10); {
	case k < 2:
		_ = old.Pause(w.pick())
	case k < 4:
		_ = old.Resume(w.pick())
	case k < 6:
		_ = old.RunNow(w.pick())
	case k < 8:
		_ = old.Remove(w.pick())
	default:
		_ = old.Add(w.late[w.rng.IntN(len(w.late))])
	}
}

// newSide returns a supervisor of the new process for w, on clk: the
// kinds it registers (not k.lost) and the tasks registered by ID, each
// with no jitter, so that two of them are alike.
func (w *eqWorld) newSide(t *testing.T, clk *fakeClock) *Supervisor {
	t.Helper()
	s, _ := newTest(t, Options{now: clk.Now})
	if err := s.RegisterKind(Kind{Name: "k.data", Version: 1, Run: nop}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tk := range w.reg {
		if seen[tk.ID] {
			continue
		}
		seen[tk.ID] = true
		tk.Jitter, tk.Run = 0, nop
		mustAdd(t, s, tk)
	}
	mustAdd(t, s, Task{ID: "new-only", Kind: "reg", Every: time.Second, Run: nop})
	return s
}

// supView is what two supervisors must agree on: the snapshot they
// would write (records by ID, totals, last finish), the queue, the
// counts.
type supView struct {
	lastFinish int64
	totals     totals
	recs       map[string]record
	queue      map[string]string
	stats      Stats
	orphans    []OrphanInfo
	multis     []string
}

func viewOf(t *testing.T, s *Supervisor) supView {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	if err := s.captureLocked(&buf); err != nil {
		t.Fatal(err)
	}
	snap, err := readSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := snap.records()
	if err != nil {
		t.Fatal(err)
	}
	v := supView{lastFinish: snap.lastFinish, totals: snap.totals, recs: map[string]record{}, queue: map[string]string{}}
	for _, r := range recs {
		r.id, r.idb = string(r.idb), nil
		if _, dup := v.recs[r.id]; dup {
			t.Fatalf("task %q written twice", r.id)
		}
		v.recs[r.id] = r
	}
	for _, e := range s.q.ents {
		tk := e.task(s.all)
		if tk == nil || tk.paused && !tk.runNow {
			continue // stale: never dispatched
		}
		if _, dup := v.queue[tk.id]; dup {
			t.Fatalf("task %q queued twice", tk.id)
		}
		v.queue[tk.id] = fmt.Sprint(e.due, " ", tk.status)
	}
	// The counts kept must be the counts there are.
	var counts [numStatus]int
	dups := 0
	for _, tk := range s.all {
		counts[tk.status]++
		if tk.maybeDup {
			dups++
		}
	}
	if counts != s.counts || dups != s.dupCount {
		t.Fatalf("counts kept %v (dups %d), counted %v (dups %d)", s.counts, s.dupCount, counts, dups)
	}
	v.stats = Stats{Tasks: len(s.all), Orphaned: len(s.orphans), MaybeDuplicated: s.dupCount}
	for tk := range s.multis {
		v.multis = append(v.multis, tk.id)
	}
	slices.Sort(v.multis)
	for id, rec := range s.orphans {
		v.orphans = append(v.orphans, OrphanInfo{ID: id, Kind: rec.kind, Runs: rec.runs, Data: rec.flags&flagData != 0})
	}
	slices.SortFunc(v.orphans, func(a, b OrphanInfo) int { return cmp.Compare(a.ID, b.ID) })
	return v
}

// sameView fails t where a (pre-copy) and b (one round) differ.
func sameView(t *testing.T, a, b supView) {
	t.Helper()
	if a.lastFinish != b.lastFinish || a.totals != b.totals {
		t.Errorf("last finish %d, totals %+v; one round: %d, %+v", a.lastFinish, a.totals, b.lastFinish, b.totals)
	}
	n := 0
	for id, rb := range b.recs {
		ra, ok := a.recs[id]
		if !reflect.DeepEqual(ra, rb) && n < 5 {
			n++
			t.Errorf("task %q (present %v):\npre-copy  %+v\none round %+v", id, ok, ra, rb)
		}
	}
	for id, ra := range a.recs {
		if _, ok := b.recs[id]; !ok && n < 5 {
			n++
			t.Errorf("task %q only after pre-copy: %+v", id, ra)
		}
	}
	if !reflect.DeepEqual(a.queue, b.queue) {
		for id, qa := range a.queue {
			if qb := b.queue[id]; qa != qb {
				t.Errorf("queue: %q at %q, one round %q", id, qa, qb)
			}
		}
		for id, qb := range b.queue {
			if _, ok := a.queue[id]; !ok {
				t.Errorf("queue: %q missing, one round %q", id, qb)
			}
		}
	}
	if !reflect.DeepEqual(a.stats, b.stats) || !slices.Equal(a.orphans, b.orphans) || !slices.Equal(a.multis, b.multis) {
		t.Errorf("stats %+v orphans %v multis %v;\none round %+v orphans %v multis %v",
			a.stats, a.orphans, a.multis, b.stats, b.orphans, b.multis)
	}
}

// checkNoTracking fails unless s tracks nothing and no task is marked.
func checkNoTracking(t *testing.T, s *Supervisor) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pc != nil {
		t.Fatalf("still tracking: %d dirty, %d removed", len(s.pc.dirty), len(s.pc.removed))
	}
	for _, tk := range s.all {
		if tk.pc&pcDirty != 0 {
			t.Fatalf("task %q still marked dirty", tk.id)
		}
	}
}

// TestPreCopyEquivalence is the property that the tracking marks every
// change: a running supervisor with tasks of every sort (registered by ID
// and data, OverlapAllow with runs cut off and pending, loops, paused, in
// backoff, done, one-off, orphans) is pre-copied while it runs and an
// application changes it between the slices of the first round; after
// Freeze, base plus delta restored into one new supervisor, and a full
// Capture of the same frozen supervisor into another, must give the same
// supervisor: snapshot, queue, counts, orphans.
func TestPreCopyEquivalence(t *testing.T) {
	seeds := 24
	if testing.Short() {
		seeds = 6
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { testPreCopyEquivalence(t, seed) })
	}
}

func testPreCopyEquivalence(t *testing.T, seed uint64) {
	smallSlices(t, 3)
	w, old := newEqWorld(t, seed)
	for range w.rng.IntN(10) { // paused, removed, ... before the round
		w.op(old)
		time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
	}
	// The second round comes after a Thaw: the runs cut off by the
	// first one run again as possible duplicates, and the first round's
	// tracking must have left no trace.
	for round := range 2 {
		t.Logf("round %d", round+1)
		equivalenceRound(t, w, old)
		if t.Failed() {
			return
		}
		time.Sleep(time.Duration(w.rng.IntN(10)) * time.Millisecond)
	}
}

// equivalenceRound pre-copies old, changing it meanwhile, and checks the
// result against a one-round handoff of the same state; old is thawed
// after.
func equivalenceRound(t *testing.T, w *eqWorld, old *Supervisor) {
	t.Helper()
	ow := &opWriter{op: func() {
		for range w.rng.IntN(3) {
			w.op(old)
		}
		if w.rng.IntN(4) == 0 {
			time.Sleep(time.Millisecond) // let runs finish between slices
		}
	}}
	if err := old.preCopyCapture(ow); err != nil {
		t.Fatal(err)
	}
	base := ow.buf.Bytes()
	for range w.rng.IntN(20) {
		w.op(old)
		time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
	}
	// Middle rounds while old runs, its runs in flight among them, with
	// changes between them.
	var middles [][]byte
	for range w.rng.IntN(4) {
		var mid bytes.Buffer
		if err := old.preCopyDelta(&mid); err != nil {
			t.Fatal(err)
		}
		middles = append(middles, mid.Bytes())
		for range w.rng.IntN(10) {
			w.op(old)
			time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
		}
	}
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The delta and the one-round snapshot of the same frozen state: a
	// run cut off by the freeze bound may end between two captures.
	var delta, full bytes.Buffer
	old.mu.Lock()
	errD := old.deltaLocked(&delta, true)
	errF := old.captureLocked(&full)
	old.mu.Unlock()
	if errD != nil || errF != nil {
		t.Fatal(errD, errF)
	}
	old.Thaw()
	checkNoTracking(t, old)

	clk := &fakeClock{t: wallNow()}
	a := w.newSide(t, clk)
	b := w.newSide(t, clk)
	if err := a.preCopyRestore(bytes.NewReader(base)); err != nil {
		t.Fatal(err)
	}
	for i, mid := range middles {
		if err := a.preCopyRestoreDelta(bytes.NewReader(mid)); err != nil {
			t.Fatalf("middle round %d: %v", i+1, err)
		}
	}
	if err := a.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(bytes.NewReader(full.Bytes())); err != nil {
		t.Fatal(err)
	}
	if len(middles) > 0 {
		// Reset after the middle rounds undoes them all, and the base.
		r := w.newSide(t, clk)
		fresh := viewOf(t, r)
		if err := r.preCopyRestore(bytes.NewReader(base)); err != nil {
			t.Fatal(err)
		}
		for _, mid := range middles {
			if err := r.preCopyRestoreDelta(bytes.NewReader(mid)); err != nil {
				t.Fatal(err)
			}
		}
		r.Reset()
		if r.pcr != nil {
			t.Fatal("awaiting a delta after Reset")
		}
		sameView(t, viewOf(t, r), fresh)
		if t.Failed() {
			t.Fatalf("Reset after %d middle rounds left changes", len(middles))
		}
	}
	vb := viewOf(t, b)
	t.Log("b ok")
	va := viewOf(t, a)
	if len(vb.recs) < 50 {
		t.Fatalf("only %d tasks in the snapshot", len(vb.recs))
	}
	sameView(t, va, vb)
	if t.Failed() {
		t.Logf("base %d bytes, %d middle rounds, delta %d bytes, full %d bytes", len(base), len(middles), delta.Len(), full.Len())
	}
}

// handoffCase drives a pre-copy by hand on a fake clock: runs are
// dispatched and finished by the test, so that one path of the tracking
// is taken at a time.
type handoffCase struct {
	t   *testing.T
	clk *fakeClock
	reg func(*Supervisor)
	old *Supervisor
}

func newHandoffCase(t *testing.T, reg func(*Supervisor)) *handoffCase {
	c := &handoffCase{t: t, clk: newFakeClock(), reg: reg}
	c.old = c.side()
	return c
}

func (c *handoffCase) side() *Supervisor {
	s, _ := newTest(c.t, Options{now: c.clk.Now, FreezeTimeout: time.Millisecond})
	c.reg(s)
	return s
}

// dispatch starts a run of the task id, due, and leaves it in flight.
func (c *handoffCase) dispatch(id string) job {
	c.t.Helper()
	s := c.old
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.q.len() > 0 {
		if tk := s.q.pop(s.all); s.runnableLocked(tk) && tk.id == id {
			return s.dispatchLocked(tk)
		} else if s.runnableLocked(tk) {
			defer s.pushLocked(tk) // not this one: queue it again
		}
	}
	c.t.Fatalf("task %q is not due", id)
	return job{}
}

// finish ends the run of j with err.
func (c *handoffCase) finish(j job, err error) {
	s := c.old
	s.mu.Lock()
	now := c.clk.Now()
	s.finishLocked(j, err, false, now, now, false, false)
	s.mu.Unlock()
}

// freezeAndCheck freezes the old supervisor, cutting off the runs in
// flight, writes the delta and a one-round snapshot of the same state,
// restores them into two new supervisors and compares them; then thaws.
func (c *handoffCase) freezeAndCheck(base []byte) {
	c.t.Helper()
	if err := c.old.Freeze(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	var delta, full bytes.Buffer
	c.old.mu.Lock()
	errD := c.old.deltaLocked(&delta, true)
	errF := c.old.captureLocked(&full)
	c.old.mu.Unlock()
	if errD != nil || errF != nil {
		c.t.Fatal(errD, errF)
	}
	c.old.Thaw()
	a, b := c.side(), c.side()
	if err := a.preCopyRestore(bytes.NewReader(base)); err != nil {
		c.t.Fatal(err)
	}
	if err := a.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); err != nil {
		c.t.Fatal(err)
	}
	if err := b.Restore(bytes.NewReader(full.Bytes())); err != nil {
		c.t.Fatal(err)
	}
	sameView(c.t, viewOf(c.t, a), viewOf(c.t, b))
}

func (c *handoffCase) base() []byte {
	c.t.Helper()
	var buf bytes.Buffer
	if err := c.old.preCopyCapture(&buf); err != nil {
		c.t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPreCopyMarksEachPath takes, one at a time, the paths on which only
// one mark sees a change (the random test mostly takes several marks at
// once): each case fails with that mark left out.
func TestPreCopyMarksEachPath(t *testing.T) {
	periodic := func(s *Supervisor) {
		mustAdd(t, s, Task{ID: "a", Every: time.Second, Run: nop}, Task{ID: "b", Every: time.Second, Run: nop})
	}
	allow := func(s *Supervisor) {
		mustAdd(t, s, Task{ID: "a", Every: time.Second, Overlap: OverlapAllow, MaxConcurrent: 3, Run: nop})
	}
	t.Run("checkpoint of a run again after a cut-off", func(t *testing.T) {
		// Checkpoint: the run was dispatched before the round, and its
		// cut-off changes nothing else, the task being a possible
		// duplicate already.
		c := newHandoffCase(t, periodic)
		c.clk.Advance(time.Second)
		j := c.dispatch("a")
		if err := c.old.Freeze(context.Background()); err != nil { // cut off
			t.Fatal(err)
		}
		c.finish(j, nil)
		c.old.Thaw()
		j = c.dispatch("a") // the run again, maybeDup
		base := c.base()
		if err := (&Run{t: j.t, s: c.old}).Checkpoint([]byte("new state")); err != nil {
			t.Fatal(err)
		}
		c.freezeAndCheck(base)
	})
	t.Run("cut-off of a run dispatched before the round", func(t *testing.T) {
		// setMaybeDupLocked: the cut-off makes the task a possible
		// duplicate, and nothing else marks it.
		c := newHandoffCase(t, periodic)
		c.clk.Advance(time.Second)
		c.dispatch("a")
		base := c.base()
		c.freezeAndCheck(base)
	})
	t.Run("run ends while another runs, paused", func(t *testing.T) {
		// finishLocked: an OverlapAllow task, paused with two runs in
		// flight, counts one; its status stays running. The other is a
		// run again of a cut-off one (its cut-off marks nothing).
		c := newHandoffCase(t, allow)
		c.clk.Advance(time.Second)
		j1 := c.dispatch("a")
		if err := c.old.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.finish(j1, nil) // pending, as a possible duplicate
		c.old.Thaw()
		j2 := c.dispatch("a") // the pending run
		c.clk.Advance(time.Second)
		j3 := c.dispatch("a")
		if err := c.old.Pause("a"); err != nil {
			t.Fatal(err)
		}
		base := c.base()
		c.finish(j3, nil) // j2 stays in flight
		_ = j2
		c.freezeAndCheck(base)
	})
	t.Run("pause and resume of a done task", func(t *testing.T) {
		// Pause and Resume: a done task changes no status.
		c := newHandoffCase(t, func(s *Supervisor) {
			mustAdd(t, s, Task{ID: "a", Every: time.Second, End: c0.Add(1500 * time.Millisecond), Run: nop},
				Task{ID: "b", Every: time.Second, End: c0.Add(1500 * time.Millisecond), Run: nop})
		})
		c.clk.Advance(time.Second)
		stepAll(t, c.old, 10) // both done
		if err := c.old.Pause("b"); err != nil {
			t.Fatal(err)
		}
		base := c.base()
		if err := c.old.Pause("a"); err != nil {
			t.Fatal(err)
		}
		if err := c.old.Resume("b"); err != nil {
			t.Fatal(err)
		}
		c.freezeAndCheck(base)
	})
	t.Run("run now of an idle task", func(t *testing.T) {
		// setStatusLocked: RunNow moves the due time of an idle task.
		c := newHandoffCase(t, periodic)
		base := c.base()
		if err := c.old.RunNow("a"); err != nil {
			t.Fatal(err)
		}
		c.freezeAndCheck(base)
	})
	t.Run("failed run and removal", func(t *testing.T) {
		// finishLocked and the removal: a run that ends in backoff.
		c := newHandoffCase(t, periodic)
		c.clk.Advance(time.Second)
		j := c.dispatch("a")
		base := c.base()
		c.finish(j, errors.New("down"))
		if err := c.old.Remove("b"); err != nil {
			t.Fatal(err)
		}
		c.freezeAndCheck(base)
	})
}

// c0 is newFakeClock's start.
var c0 = newFakeClock().Now()

// TestPreCopyRunsOnce: tasks run while the first round is taken and
// while the application pauses, resumes and asks for runs; after the
// handover every task's runs, across both processes, are numbered 1..n
// without a gap or a repeat, and the new process runs them.
func TestPreCopyRunsOnce(t *testing.T) {
	smallSlices(t, 7)
	log := newSeqLog()
	body := func(_ context.Context, r *Run) error {
		log.add(r.ID(), r.Seq())
		return r.Checkpoint(fmt.Appendf(nil, "%d", r.Seq()))
	}
	var tasks []Task
	for i := range 60 {
		tasks = append(tasks, Task{ID: fmt.Sprint("p", i), Every: time.Duration(2+i%4) * time.Millisecond, Run: body})
	}
	for i := range 4 {
		tasks = append(tasks, Task{ID: fmt.Sprint("allow", i), Every: 2 * time.Millisecond, Overlap: OverlapAllow, Run: body})
	}
	kind := Kind{Name: "k", Run: body}
	side := func() *Supervisor {
		s, _ := newTest(t, Options{now: wallNow, Workers: 4})
		if err := s.RegisterKind(kind); err != nil {
			t.Fatal(err)
		}
		mustAdd(t, s, tasks...)
		return s
	}
	old := side()
	for i := range 30 {
		mustAdd(t, old, Task{ID: fmt.Sprint("d", i), Kind: "k", Every: 3 * time.Millisecond})
	}
	start(t, old)
	time.Sleep(20 * time.Millisecond)
	rng := rand.New(rand.NewPCG(1, 2))
	ow := &opWriter{op: func() {
		id := fmt.Sprint("p", rng.IntN(60))
		switch rng.IntN(3) {
		case 0:
			_ = old.RunNow(id)
		case 1:
			_ = old.Pause(id)
		default:
			_ = old.Resume(id)
		}
		time.Sleep(200 * time.Microsecond)
	}}
	if err := old.preCopyCapture(ow); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var delta bytes.Buffer
	if err := old.preCopyDelta(&delta); err != nil {
		t.Fatal(err)
	}
	if st := old.Stats(); st.CutOffTotal != 0 {
		t.Fatalf("%d runs cut off: this test is about runs that end", st.CutOffTotal)
	}
	before := map[string]int{}
	for id, seqs := range log.seqs {
		before[id] = len(seqs)
	}

	nw := side()
	if err := nw.preCopyRestore(bytes.NewReader(ow.buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := nw.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); err != nil {
		t.Fatal(err)
	}
	start(t, nw)
	time.Sleep(40 * time.Millisecond)
	if err := nw.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range log.seqs {
			if !yield(id) {
				return
			}
		}
	})
	ranAfter := 0
	for _, id := range ids {
		seqs := log.get(id)
		checkConsecutive(t, id, slices.Sorted(slices.Values(seqs)))
		if len(seqs) > before[id] {
			ranAfter++
		}
	}
	if len(ids) < 90 || ranAfter < len(ids)/2 {
		t.Fatalf("%d tasks ran, %d of them in the new process", len(ids), ranAfter)
	}
	if h := nw.Handoff(); h.LastRunBeforeFreeze.IsZero() || h.FirstRunAfterRestore.IsZero() {
		t.Errorf("handoff %+v", h)
	}
}

// TestPreCopyOutOfOrder: each step refuses to come without the one
// before it, and changes nothing when it does.
func TestPreCopyOutOfOrder(t *testing.T) {
	clk := newFakeClock()
	reg := func(s *Supervisor) {
		for i := range 5 {
			mustAdd(t, s, Task{ID: fmt.Sprint("t", i), Every: time.Second, Run: nop})
		}
	}
	old, _ := newTest(t, Options{now: clk.Now})
	reg(old)
	var buf bytes.Buffer
	if err := old.preCopyDelta(&buf); !errors.Is(err, ErrNoPreCopy) {
		t.Fatalf("Delta without a first round: %v", err)
	}
	if err := old.preCopyCapture(&buf); err != nil {
		t.Fatal(err)
	}
	base := bytes.Clone(buf.Bytes())
	var mid bytes.Buffer
	if err := old.preCopyDelta(&mid); err != nil {
		t.Fatalf("Delta before Freeze (a middle round): %v", err)
	}
	if old.pc == nil {
		t.Fatal("a middle round ended the tracking")
	}
	old.preCopyStop()
	checkNoTracking(t, old)
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := old.preCopyDelta(io.Discard); !errors.Is(err, ErrNoPreCopy) {
		t.Fatalf("Delta after Stop: %v", err)
	}
	if err := old.preCopyCapture(io.Discard); err != nil { // a new round, frozen
		t.Fatal(err)
	}
	var delta bytes.Buffer
	if err := old.preCopyDelta(&delta); err != nil {
		t.Fatal(err)
	}
	checkNoTracking(t, old)

	nw, _ := newTest(t, Options{now: clk.Now})
	reg(nw)
	if err := nw.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); !errors.Is(err, ErrNoPreCopy) {
		t.Fatalf("RestoreDelta without Restore: %v", err)
	}
	if err := nw.preCopyRestore(bytes.NewReader(base)); err != nil {
		t.Fatal(err)
	}
	if nw.preCopyWant() {
		t.Error("Want while awaiting a delta")
	}
	for what, err := range map[string]error{
		"Run":              nw.Run(context.Background()),
		"Capture":          nw.Capture(io.Discard),
		"Restore":          nw.Restore(bytes.NewReader(capture(t, old))),
		"pre-copy Restore": nw.preCopyRestore(bytes.NewReader(base)),
		"pre-copy Capture": nw.preCopyCapture(io.Discard),
	} {
		if !errors.Is(err, ErrPreCopyIncomplete) {
			t.Errorf("%s before RestoreDelta: %v", what, err)
		}
	}
	// A middle round leaves the tasks incomplete, and may come again.
	for range 2 {
		if err := nw.preCopyRestoreDelta(bytes.NewReader(mid.Bytes())); err != nil {
			t.Fatal(err)
		}
		if err := nw.Run(context.Background()); !errors.Is(err, ErrPreCopyIncomplete) {
			t.Errorf("Run after a middle round: %v", err)
		}
	}
	if err := nw.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := nw.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); !errors.Is(err, ErrNoPreCopy) {
		t.Fatalf("a second RestoreDelta: %v", err)
	}
	start(t, nw) // Run works now
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		nw.mu.Lock()
		ph := nw.phase
		nw.mu.Unlock()
		if ph == phaseRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
	}
}

// TestPreCopyWant: a first round is worth it from preCopyMinTasks tasks.
func TestPreCopyWant(t *testing.T) {
	s, _ := newTest(t, Options{})
	for i := range preCopyMinTasks {
		if i == preCopyMinTasks-1 && s.preCopyWant() {
			t.Fatalf("Want with %d tasks", i)
		}
		mustAdd(t, s, Task{ID: fmt.Sprint("t", i), Every: time.Hour, Run: nop})
	}
	if !s.preCopyWant() {
		t.Fatalf("no Want with %d tasks", preCopyMinTasks)
	}
	if p := s.Participant(); p.PreCopy == nil || p.PreCopy.Want == nil || p.PreCopy.RestoreDelta == nil {
		t.Fatal("the participant has no PreCopy")
	}
}

// richCase is a handoff case with tasks registered by ID, data tasks, an
// OverlapAllow task with a run cut off, tasks that become orphans in the
// new process, and a delta that changes, adds and removes some of each.
func richCase(t *testing.T) (c *handoffCase, base, delta, full []byte) {
	t.Helper()
	c = newHandoffCase(t, func(s *Supervisor) {
		if err := s.RegisterKind(Kind{Name: "k", Version: 1, Run: nop}); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			mustAdd(t, s, Task{ID: fmt.Sprint("r", i), Kind: "reg", Version: 1, Every: time.Second, Run: nop})
		}
		mustAdd(t, s, Task{ID: "allow", Every: time.Second, Overlap: OverlapAllow, Run: nop})
	})
	old := c.old
	if err := old.RegisterKind(Kind{Name: "k.old", Run: nop}); err != nil { // not in the new process
		t.Fatal(err)
	}
	for i := range 6 {
		mustAdd(t, old, Task{ID: fmt.Sprint("d", i), Kind: "k", Every: time.Second, Args: []byte{byte(i)}},
			Task{ID: fmt.Sprint("lost", i), Kind: "k.old", Every: time.Second})
	}
	mustAdd(t, old, Task{ID: "old-only", Every: time.Second, Run: nop}, Task{ID: "old-only2", Every: time.Second, Run: nop})
	c.clk.Advance(time.Second)
	c.dispatch("allow") // cut off by the first Freeze: pending
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	old.Thaw()
	base = c.base()
	c.clk.Advance(time.Second)
	for range 5 {
		step(old)
	}
	for _, id := range []string{"r1", "d1", "lost1", "old-only"} {
		if err := old.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	mustAdd(t, old, Task{ID: "d1", Kind: "k", Every: 2 * time.Second}, Task{ID: "d9", Kind: "k", Every: time.Second})
	if err := old.Pause("d2"); err != nil {
		t.Fatal(err)
	}
	if err := old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var db, fb bytes.Buffer
	old.mu.Lock()
	errD, errF := old.deltaLocked(&db, true), old.captureLocked(&fb)
	old.mu.Unlock()
	if errD != nil || errF != nil {
		t.Fatal(errD, errF)
	}
	return c, base, db.Bytes(), fb.Bytes()
}

// preCopyStreamBytes writes a pre-copy stream by hand: magic, header,
// then chunks of kind and items.
func preCopyStreamBytes(magic [4]byte, header []byte, chunks ...[]byte) []byte {
	var buf bytes.Buffer
	buf.Write(magic[:])
	cw := chunkWriter{w: &buf}
	cw.buf = append(cw.buf, header...)
	cw.flush()
	for _, c := range chunks {
		cw.buf = append(cw.buf[:0], c...)
		cw.flush()
	}
	buf.WriteByte(0)
	return buf.Bytes()
}

// TestPreCopyCorruptDelta: a delta damaged anywhere (a byte changed, cut
// short), or well framed but wrong (counts, kinds, a task twice, state
// this binary cannot read), fails and changes nothing: the supervisor
// still awaits a delta, and the intact one applies after.
func TestPreCopyCorruptDelta(t *testing.T) {
	c, base, delta, full := richCase(t)
	// A damaged base fails as a damaged snapshot does: nothing changed,
	// no delta awaited.
	z := c.side()
	fresh := viewOf(t, z)
	for i := 0; i < len(base); i += 3 {
		b := bytes.Clone(base)
		b[i] ^= 0x01
		if err := z.preCopyRestore(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("base byte %d changed: %v", i, err)
		}
		if z.pcr != nil {
			t.Fatalf("base byte %d changed: awaiting a delta", i)
		}
	}
	sameView(t, viewOf(t, z), fresh)

	a := c.side()
	if err := a.preCopyRestore(bytes.NewReader(base)); err != nil {
		t.Fatal(err)
	}
	before := viewOf(t, a)
	check := func(what string, b []byte, want error) {
		t.Helper()
		err := a.preCopyRestoreDelta(bytes.NewReader(b))
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
		if a.pcr == nil {
			t.Fatalf("%s: no longer awaiting the delta", what)
		}
		for _, tk := range a.all {
			if tk.pc&pcSeen != 0 {
				t.Fatalf("%s: task %q left marked", what, tk.id)
			}
		}
		sameView(t, viewOf(t, a), before)
		if t.Failed() {
			t.Fatalf("%s changed the supervisor", what)
		}
	}
	for i := range delta {
		b := bytes.Clone(delta)
		b[i] ^= 0x20
		check(fmt.Sprint("byte ", i, " changed"), b, ErrCorrupt)
	}
	for n := range len(delta) {
		check(fmt.Sprint("cut at ", n), delta[:n], ErrCorrupt)
	}
	hdr := func(removed, records uint64) []byte {
		b := appendHeader(nil, 1, 2, totals{})
		return binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint(b, removed), records), 1)
	}
	rec := func(r record) []byte {
		b := append([]byte{chunkRecords}, 1)
		return appendRecord(b, &r)
	}
	good := record{id: "r0", kind: "reg", flags: 0, runs: 3}
	for _, bad := range []struct {
		what string
		b    []byte
		want error
	}{
		{"a removed ID announced, none sent", preCopyStreamBytes(deltaMagic, hdr(1, 0)), ErrCorrupt},
		{"a record sent, none announced", preCopyStreamBytes(deltaMagic, hdr(0, 0), rec(good)), ErrCorrupt},
		{"an unknown chunk kind", preCopyStreamBytes(deltaMagic, hdr(0, 0), []byte{'X', 1, 0}), ErrCorrupt},
		{"an empty removed ID", preCopyStreamBytes(deltaMagic, hdr(1, 0), []byte{chunkRemoved, 1, 0}), ErrCorrupt},
		{"a count beyond the chunk", preCopyStreamBytes(deltaMagic, hdr(0, 200), []byte{chunkRecords, 200, 1, 0}), ErrCorrupt},
		{"a task twice", preCopyStreamBytes(deltaMagic, hdr(0, 2), rec(good), rec(good)), ErrCorrupt},
		{"fewer hints than records", preCopyStreamBytes(deltaMagic, hdr(0, 2), rec(good), rec(record{id: "r2", kind: "reg"}),
			[]byte{chunkHints, 1, 0}), ErrCorrupt},
		{"a last flag neither 0 nor 1", preCopyStreamBytes(deltaMagic, binary.AppendUvarint(hdr(0, 0)[:len(hdr(0, 0))-1], 2)), ErrCorrupt},
		{"a base for a delta", base, ErrCorrupt},
		{"a snapshot for a delta", full, ErrCorrupt},
		{"state this binary cannot read", preCopyStreamBytes(deltaMagic, hdr(0, 1),
			rec(record{id: "r0", kind: "reg", version: 9, state: []byte("v9")})), ErrStateVersion},
	} {
		check(bad.what, bad.b, bad.want)
	}
	if err := a.preCopyRestore(bytes.NewReader(delta)); !errors.Is(err, ErrPreCopyIncomplete) {
		t.Fatalf("a second base: %v", err)
	}
	if err := a.preCopyRestoreDelta(bytes.NewReader(delta)); err != nil {
		t.Fatal(err)
	}
	b := c.side()
	if err := b.Restore(bytes.NewReader(full)); err != nil {
		t.Fatal(err)
	}
	sameView(t, viewOf(t, a), viewOf(t, b))
}

// TestPreCopyReset: Reset after the base, and after base and delta,
// leaves the supervisor as registered, with no orphans, data tasks or
// totals from the handoff; a one-round Restore after it is the one-round
// result.
func TestPreCopyReset(t *testing.T) {
	c, base, delta, full := richCase(t)
	fresh := viewOf(t, c.side())
	b := c.side()
	if err := b.Restore(bytes.NewReader(full)); err != nil {
		t.Fatal(err)
	}
	want := viewOf(t, b)
	// The case has what it says it has.
	if ti := info(t, b, "allow"); ti.Pending != 1 {
		t.Fatalf("allow: %+v, want a pending run", ti)
	}
	if ti := info(t, b, "d1"); ti.Schedule != "every 2s" || !ti.Data {
		t.Fatalf("d1: %+v, want the one added again", ti)
	}
	if o := b.Orphans(); len(o) != 5+1 {
		t.Fatalf("orphans %+v, want lost0..5 but lost1, and old-only2", o)
	}
	for _, rounds := range []int{1, 2} {
		a := c.side()
		if err := a.preCopyRestore(bytes.NewReader(base)); err != nil {
			t.Fatal(err)
		}
		if rounds == 2 {
			if err := a.preCopyRestoreDelta(bytes.NewReader(delta)); err != nil {
				t.Fatal(err)
			}
		}
		a.Reset()
		if a.pcr != nil {
			t.Fatal("still awaiting a delta after Reset")
		}
		sameView(t, viewOf(t, a), fresh)
		if err := a.Restore(bytes.NewReader(full)); err != nil {
			t.Fatal(err)
		}
		sameView(t, viewOf(t, a), want)
		if t.Failed() {
			t.Fatalf("after %d rounds", rounds)
		}
	}
}

// TestPreCopyChurn: tasks added and removed by the thousand during the
// first round keep the tracking bounded by the tasks there are, and the
// delta right.
func TestPreCopyChurn(t *testing.T) {
	c := newHandoffCase(t, func(s *Supervisor) {
		if err := s.RegisterKind(Kind{Name: "k", Run: nop}); err != nil {
			t.Fatal(err)
		}
		mustAdd(t, s, Task{ID: "a", Every: time.Second, Run: nop})
	})
	base := c.base()
	for i := range 5000 {
		id := fmt.Sprint("tmp", i)
		mustAdd(t, c.old, Task{ID: id, Kind: "k", Every: time.Second})
		if i%1000 != 999 { // every thousandth stays
			if err := c.old.Remove(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.old.mu.Lock()
	n := len(c.old.pc.dirty)
	c.old.mu.Unlock()
	if n > 2*6+1024+1 {
		t.Fatalf("%d tasks tracked for 6 registered", n)
	}
	c.freezeAndCheck(base)
}

// TestPreCopyRestoreDuringRound: a Restore in the old process while a
// first round is tracked replaces the tasks wholesale: Delta fails, and
// says why, rather than write a delta that misses the replacement.
func TestPreCopyRestoreDuringRound(t *testing.T) {
	reg := func(s *Supervisor) { mustAdd(t, s, Task{ID: "a", Every: time.Second, Run: nop}) }
	c := newHandoffCase(t, reg)
	snap := capture(t, c.side())
	c.base()
	if err := c.old.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := c.old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := c.old.preCopyDelta(io.Discard)
	if !errors.Is(err, ErrNoPreCopy) || !strings.Contains(err.Error(), "Restore replaced the tasks") {
		t.Fatalf("Delta after a Restore: %v", err)
	}
	checkNoTracking(t, c.old)
}

// TestPreCopyDeltaDoneStaysUnqueued: a task that the delta restores as
// done is not queued, and is not queued either when it moves in
// Supervisor.all afterwards. (A delta that made its queue entry stale by
// bumping its push number left it looking queued, and the move queued it
// again: the task, past its End, ran again in the new process.)
func TestPreCopyDeltaDoneStaysUnqueued(t *testing.T) {
	ran := map[string]int{}
	count := func(_ context.Context, r *Run) error { ran[r.ID()]++; return nil }
	c := &handoffCase{t: t, clk: newFakeClock()}
	end := c.clk.Now().Add(1500 * time.Millisecond) // one run, then done
	c.reg = func(s *Supervisor) {
		mustAdd(t, s, Task{ID: "a", Every: time.Hour, Run: count}, Task{ID: "once", Every: time.Second, End: end, Run: count})
	}
	c.old = c.side()
	base := c.base()
	c.clk.Advance(time.Second)
	c.finish(c.dispatch("once"), nil) // done, after the base
	if err := c.old.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var delta bytes.Buffer
	if err := c.old.preCopyDelta(&delta); err != nil {
		t.Fatal(err)
	}
	nw := c.side()
	if err := nw.preCopyRestore(bytes.NewReader(base)); err != nil {
		t.Fatal(err)
	}
	if err := nw.preCopyRestoreDelta(bytes.NewReader(delta.Bytes())); err != nil {
		t.Fatal(err)
	}
	if st := info(t, nw, "once").Status; st != StatusDone {
		t.Fatalf("once restored %v, want done", st)
	}
	if err := nw.Remove("a"); err != nil { // once, last in all, moves to a's place
		t.Fatal(err)
	}
	nw.mu.Lock()
	for _, e := range nw.q.ents {
		if tk := e.task(nw.all); tk != nil && tk.status == StatusDone {
			t.Errorf("task %q queued while done (push %d, position %d)", tk.id, e.seq, e.pos)
		}
	}
	nw.mu.Unlock()
	c.clk.Advance(time.Hour)
	stepAll(t, nw, 10)
	if ran["once"] != 0 {
		t.Errorf("once ran %d times in the new process, want 0: it ran in the old one", ran["once"])
	}
}
