package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"
)

// counterKind returns a kind whose runs count in an 8-byte state and log
// their sequence numbers.
func counterKind(name string, log *seqLog) Kind {
	return Kind{Name: name, Version: 1, Run: func(_ context.Context, r *Run) error {
		var n uint64
		if st := r.State(); len(st) == 8 {
			n = binary.BigEndian.Uint64(st)
		}
		if n != r.Seq()-1 {
			return errors.New("state does not match the sequence number")
		}
		log.add(r.ID(), r.Seq())
		return r.Checkpoint(binary.BigEndian.AppendUint64(nil, n+1))
	}}
}

func mustKind(t *testing.T, s *Supervisor, kinds ...Kind) {
	t.Helper()
	for _, k := range kinds {
		if err := s.RegisterKind(k); err != nil {
			t.Fatalf("RegisterKind(%q): %v", k.Name, err)
		}
	}
}

func restore(t *testing.T, s *Supervisor, snap []byte) {
	t.Helper()
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
}

func TestAddDataTaskErrors(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustKind(t, s, counterKind("count", newSeqLog()))
	for _, c := range []struct {
		task Task
		want error
	}{
		{Task{ID: "a", Kind: "nope", Every: time.Second}, ErrUnknownKind},
		{Task{ID: "b", Kind: "count", Cron: "* * *"}, ErrInvalidTask},
		{Task{ID: "c", Kind: "count", Cron: "* * * * *", TimeZone: "Nowhere/City"}, ErrInvalidTask},
		{Task{ID: "d", Kind: "count", Cron: "* * * * *", Every: time.Second}, ErrInvalidTask},
		{Task{ID: "e", Kind: "count", Every: time.Second, TimeZone: "UTC"}, ErrInvalidTask},
		{Task{ID: "f", Kind: "count", Every: time.Second, Overlap: 9}, ErrInvalidTask},
		{Task{ID: "g", Kind: "count", Every: time.Second, Start: time.Unix(10, 0), End: time.Unix(5, 0)}, ErrInvalidTask},
	} {
		if err := s.Add(c.task); !errors.Is(err, c.want) {
			t.Errorf("Add(%q) = %v, want %v", c.task.ID, err, c.want)
		}
	}
	mustAdd(t, s, Task{ID: "x", Kind: "count", Every: time.Second})
	if err := s.Add(Task{ID: "x", Kind: "count", Every: time.Second}); !errors.Is(err, ErrDuplicateTask) {
		t.Errorf("second Add = %v, want ErrDuplicateTask", err)
	}
	if err := s.RegisterKind(counterKind("count", newSeqLog())); !errors.Is(err, ErrDuplicateKind) {
		t.Errorf("second RegisterKind = %v, want ErrDuplicateKind", err)
	}
}

// TestDataTasksRestoreWithoutRegistration: tasks added at run time, of a
// registered kind, come back in the next process, which registers only
// the kind, with their schedules, pauses, runs and state; a one-off task
// that ran is gone, one that did not is there; a removed task is gone.
func TestDataTasksRestoreWithoutRegistration(t *testing.T) {
	clk := newFakeClock()
	log := newSeqLog()
	a, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, a, counterKind("count", log))
	now := clk.Now()
	mustAdd(t, a,
		Task{ID: "every", Kind: "count", Every: time.Second},
		Task{ID: "cron", Kind: "count", Cron: "*/2 * * * * *", TimeZone: "Europe/Paris"},
		Task{ID: "once", Kind: "count", At: now.Add(1500 * time.Millisecond)},
		Task{ID: "later", Kind: "count", At: now.Add(time.Hour)},
		Task{ID: "paused", Kind: "count", Every: time.Second, Paused: true},
		Task{ID: "gone", Kind: "count", Every: time.Second, Args: []byte("customer-7")},
	)
	for range 4 {
		clk.Advance(time.Second)
		stepAll(t, a, 20)
	}
	if _, ok := a.Task("once"); ok {
		t.Fatal("one-off task still registered after its run")
	}
	if err := a.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	cronNext := info(t, a, "cron").Next
	snap := capture(t, a)

	b, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, b, counterKind("count", log))
	restore(t, b, snap)
	for _, id := range []string{"gone", "once"} {
		if _, ok := b.Task(id); ok {
			t.Errorf("task %q came back", id)
		}
	}
	if got := info(t, b, "cron"); !got.Next.Equal(cronNext) || got.Schedule != "cron */2 * * * * * Europe/Paris" || !got.Data {
		t.Errorf("cron task restored as %+v, want next %v", got, cronNext)
	}
	if got := info(t, b, "paused"); got.Status != StatusPaused || got.Runs != 0 {
		t.Errorf("paused task restored as %+v", got)
	}
	if got := info(t, b, "later"); !got.Next.Equal(now.Add(time.Hour)) {
		t.Errorf("one-off task due at %v, want %v", got.Next, now.Add(time.Hour))
	}
	for range 4 {
		clk.Advance(time.Second)
		stepAll(t, b, 20)
	}
	for _, id := range []string{"every", "cron"} {
		seqs := log.get(id)
		checkConsecutive(t, id, seqs)
		if ti := info(t, b, id); ti.Runs != uint64(len(seqs)) || ti.Runs < 3 || ti.LastError != "" {
			t.Errorf("%s: %+v after %d runs", id, ti, len(seqs))
		}
	}
	if got := log.get("once"); len(got) != 1 {
		t.Errorf("one-off task ran %v, want once", got)
	}
	if got := log.get("paused"); len(got) != 0 {
		t.Errorf("paused task ran %v", got)
	}
}

// TestOrphanRoundTrip: a binary without kind K keeps K's tasks, lists
// them, never runs them and writes them again; a later binary with K runs
// them on with their state and numbering; one that registers K after
// Restore adopts them too.
func TestOrphanRoundTrip(t *testing.T) {
	clk := newFakeClock()
	log := newSeqLog()
	v1, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, v1, counterKind("k", log), counterKind("other", log))
	mustAdd(t, v1, Task{ID: "k1", Kind: "k", Every: time.Second, Args: []byte("a")},
		Task{ID: "o1", Kind: "other", Every: time.Second})
	clk.Advance(2500 * time.Millisecond)
	stepAll(t, v1, 10)
	runs := info(t, v1, "k1").Runs
	snap := capture(t, v1)

	v2, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, v2, counterKind("other", log))
	restore(t, v2, snap)
	if _, ok := v2.Task("k1"); ok {
		t.Fatal("k1 registered in a binary without its kind")
	}
	orphans := v2.Orphans()
	if len(orphans) != 1 || orphans[0].ID != "k1" || orphans[0].Kind != "k" || !orphans[0].Data || orphans[0].Runs != runs {
		t.Fatalf("Orphans = %+v", orphans)
	}
	if st := v2.Stats(); st.Orphaned != 1 {
		t.Errorf("Stats.Orphaned = %d", st.Orphaned)
	}
	if err := v2.Pause("k1"); !errors.Is(err, ErrOrphan) {
		t.Errorf("Pause(orphan) = %v, want ErrOrphan", err)
	}
	before := len(log.get("k1"))
	for range 5 {
		clk.Advance(time.Second)
		stepAll(t, v2, 10)
	}
	if len(log.get("k1")) != before {
		t.Fatal("an orphan ran")
	}
	snap2 := capture(t, v2)
	// Two generations without the kind: still kept.
	v2b, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, v2b, counterKind("other", log))
	restore(t, v2b, snap2)
	snap3 := capture(t, v2b)

	v3, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, v3, counterKind("k", log), counterKind("other", log))
	restore(t, v3, snap3)
	if got := info(t, v3, "k1"); got.Runs != runs {
		t.Fatalf("k1 adopted with %d runs, want %d", got.Runs, runs)
	}
	for range 3 {
		clk.Advance(time.Second)
		stepAll(t, v3, 10)
	}
	v3.mu.Lock()
	args := v3.byID.get(v3.all, "k1").spec.Args
	v3.mu.Unlock()
	if string(args) != "a" {
		t.Errorf("Args = %q after two orphaned generations", args)
	}
	checkConsecutive(t, "k1", log.get("k1"))
	if len(log.get("k1")) <= int(runs) || len(v3.Orphans()) != 0 {
		t.Errorf("k1 ran %v after adoption; orphans %v", log.get("k1"), v3.Orphans())
	}

	// Registering the kind after Restore adopts at once.
	late, _ := newTest(t, Options{now: clk.Now})
	restore(t, late, snap3)
	if len(late.Orphans()) != 2 {
		t.Fatalf("Orphans = %+v", late.Orphans())
	}
	mustKind(t, late, counterKind("k", log))
	if got := info(t, late, "k1"); got.Runs != runs {
		t.Errorf("late adoption: %+v", got)
	}
	if err := late.Remove("o1"); err != nil {
		t.Fatalf("Remove(orphan) = %v", err)
	}
	last, _ := newTest(t, Options{now: clk.Now})
	restore(t, last, capture(t, late))
	if o := last.Orphans(); len(o) != 1 || o[0].ID != "k1" {
		t.Errorf("after removing the orphan o1: %+v", o)
	}
}

func TestPauseResumeRunNow(t *testing.T) {
	clk := newFakeClock()
	log := newSeqLog()
	s, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, s, counterKind("count", log))
	mustAdd(t, s, Task{ID: "t", Kind: "count", Every: 10 * time.Second})
	next := info(t, s, "t").Next
	if err := s.RunNow("t"); err != nil {
		t.Fatal(err)
	}
	if n := stepAll(t, s, 5); n != 1 {
		t.Fatalf("RunNow: %d runs, want 1", n)
	}
	if got := info(t, s, "t"); got.Runs != 1 || !got.Next.Equal(next) {
		t.Fatalf("after RunNow: %+v, want next still %v", got, next)
	}
	if err := s.Pause("t"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(35 * time.Second)
	if n := stepAll(t, s, 5); n != 0 {
		t.Fatalf("paused task ran %d times", n)
	}
	if got := info(t, s, "t"); got.Status != StatusPaused || !got.Paused {
		t.Fatalf("paused: %+v", got)
	}
	// RunNow runs a paused task once; it stays paused.
	if err := s.RunNow("t"); err != nil {
		t.Fatal(err)
	}
	if n := stepAll(t, s, 5); n != 1 || info(t, s, "t").Status != StatusPaused {
		t.Fatalf("RunNow on a paused task: %d runs, %+v", n, info(t, s, "t"))
	}
	skipped := s.Stats().SkippedTotal
	if err := s.Resume("t"); err != nil {
		t.Fatal(err)
	}
	// The points passed while paused are skipped: next is the first after now.
	want := next.Add(30 * time.Second) // points at +10s, +20s, +30s passed; now is +35s
	if got := info(t, s, "t"); !got.Next.Equal(want) || s.Stats().SkippedTotal <= skipped {
		t.Fatalf("resumed: next %v, want %v; skipped %d", got.Next, want, s.Stats().SkippedTotal)
	}
	clk.Advance(10 * time.Second)
	if n := stepAll(t, s, 5); n != 1 {
		t.Fatalf("resumed task: %d runs, want 1", n)
	}
	checkConsecutive(t, "t", log.get("t"))
	if err := s.Pause("nope"); !errors.Is(err, ErrUnknownTask) {
		t.Errorf("Pause(unknown) = %v", err)
	}
}

// TestOverlap: a run that takes 3.5 intervals is followed at once by one
// run for the points it overran (OverlapQueue), or by the first point
// after it ended (OverlapSkip).
func TestOverlap(t *testing.T) {
	for _, c := range []struct {
		overlap Overlap
		next    time.Duration // after the long run's end
	}{
		{OverlapQueue, -2500 * time.Millisecond}, // the point after the run's: due, runs at once
		{OverlapSkip, 500 * time.Millisecond},
	} {
		clk := newFakeClock()
		s, _ := newTest(t, Options{now: clk.Now})
		start := clk.Now()
		mustAdd(t, s, Task{ID: "slow", Every: time.Second, Overlap: c.overlap,
			Run: func(context.Context, *Run) error { clk.Advance(3500 * time.Millisecond); return nil }})
		clk.Advance(time.Second)
		step(s)
		end := start.Add(4500 * time.Millisecond)
		if got := info(t, s, "slow").Next; !got.Equal(end.Add(c.next)) {
			t.Errorf("%v: next at end%+v, want end%+v", c.overlap, got.Sub(end), c.next)
		}
	}
}

// TestTimeout: a run that outlives Task.Timeout sees its context
// cancelled with ErrTimeout and counts as a failure.
func TestTimeout(t *testing.T) {
	s, _ := newTest(t, Options{})
	cause := make(chan error, 1)
	mustAdd(t, s, Task{ID: "slow", Every: time.Millisecond, Timeout: 20 * time.Millisecond,
		Run: func(ctx context.Context, r *Run) error {
			<-ctx.Done()
			if r.Seq() == 1 {
				cause <- context.Cause(ctx)
			}
			return context.Cause(ctx)
		}})
	start(t, s)
	if err := waitFor(t, cause, "the run's cancellation"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("cause = %v, want ErrTimeout", err)
	}
}

// TestStartEnd: no point before Start, none after End; then done.
func TestStartEnd(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	now := clk.Now()
	mustAdd(t, s, Task{ID: "b", Every: time.Second, Run: nop, Start: now.Add(10 * time.Second), End: now.Add(13 * time.Second)})
	if got := info(t, s, "b").Next; !got.Equal(now.Add(11 * time.Second)) {
		t.Fatalf("first run at now+%v, want now+11s", got.Sub(now))
	}
	for range 20 {
		clk.Advance(time.Second)
		stepAll(t, s, 5)
	}
	if got := info(t, s, "b"); got.Runs != 3 || got.Status != StatusDone {
		t.Fatalf("%+v, want 3 runs (11s, 12s, 13s) and done", got)
	}
}

// TestRestoreSnapshotVersion1: a snapshot of the previous format, with
// neither last_run nor spec, is still read.
func TestRestoreSnapshotVersion1(t *testing.T) {
	clk := newFakeClock()
	a, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, a, Task{ID: "x", Every: time.Second, Run: nop})
	clk.Advance(1500 * time.Millisecond)
	stepAll(t, a, 5)
	a.mu.Lock()
	rec := recordOf(a.byID.get(a.all, "x"), func(m int64) int64 { return a.wallOf(m).UnixNano() })
	a.mu.Unlock()
	// Version 1: the record without its last two fields.
	var buf bytes.Buffer
	buf.Write([]byte{'B', 'W', 'K', 1})
	cw := chunkWriter{w: &buf}
	cw.buf = binary.AppendVarint(cw.buf, clk.Now().UnixNano())
	cw.buf = binary.AppendVarint(cw.buf, 0)
	for range 5 {
		cw.buf = binary.AppendUvarint(cw.buf, 1)
	}
	cw.buf = binary.AppendUvarint(cw.buf, 1)
	cw.flush()
	full := appendRecord(nil, &rec)
	cw.buf = append(cw.buf, full[:len(full)-len(binary.AppendVarint(nil, rec.lastRun))-1]...)
	cw.flush()
	buf.WriteByte(0)

	b, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, b, Task{ID: "x", Every: time.Second, Run: nop})
	restore(t, b, buf.Bytes())
	if got := info(t, b, "x"); got.Runs != 1 {
		t.Fatalf("restored from version 1: %+v", got)
	}
}

// TestSkipMissedAfterDowntime: catch-up "none": a task restored 10.5
// intervals after its snapshot runs next at its first point in the
// future, the ten missed points counted as skipped; a SkipLate task runs
// once at once, a CatchUp one its limit, spaced.
func TestSkipMissedAfterDowntime(t *testing.T) {
	clk := newFakeClock()
	a, _ := newTest(t, Options{now: clk.Now})
	tasks := []Task{
		{ID: "none", Every: time.Second, Policy: SkipMissed, Run: nop},
		{ID: "one", Every: time.Second, Run: nop},
		{ID: "some", Every: time.Second, Policy: CatchUp, CatchUpLimit: 3, Run: nop},
	}
	mustAdd(t, a, tasks...)
	snap := capture(t, a)
	clk.Advance(11500 * time.Millisecond) // points at 1s..11s missed
	b, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, b, tasks...)
	restore(t, b, snap)
	now := clk.Now()
	if got := info(t, b, "none").Next; !got.Equal(now.Add(500 * time.Millisecond)) {
		t.Errorf("skip-missed: next at now%+v, want now+500ms", got.Sub(now))
	}
	if got := b.Stats().SkippedTotal; got != 11 {
		t.Errorf("skipped %d points, want 11", got)
	}
	counts := map[string]int{}
	for range 10 {
		for id := step(b); id != ""; id = step(b) {
			counts[id]++
		}
		clk.Advance(100 * time.Millisecond)
	}
	// In the next second: "none" once at its point, "one" once now and
	// once at the point, "some" the overdue run now, then its last three
	// missed points (CatchUpLimit) 100ms apart, then the point.
	if counts["none"] != 1 || counts["one"] != 2 || counts["some"] != 5 {
		t.Errorf("runs in the second after the restore: %v, want none 1, one 2, some 5", counts)
	}
}

// TestQueueCompacts: adding and removing tasks due in an hour, over and
// over, leaves queue entries that would wait an hour to be dropped; the
// queue stays bounded by the live tasks, and the live tasks still run.
func TestQueueCompacts(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	mustAdd(t, s, Task{ID: "keep", Every: time.Hour, Run: nop})
	for i := range 20000 {
		id := fmt.Sprint("churn-", i)
		mustAdd(t, s, Task{ID: id, Every: time.Hour, Run: nop})
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := s.Pause("keep"); err != nil {
				t.Fatal(err)
			}
			if err := s.Resume("keep"); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.mu.Lock()
	n := s.q.len()
	s.mu.Unlock()
	if n > 2*1+1024+1 {
		t.Fatalf("%d queue entries for 1 live task", n)
	}
	clk.Advance(time.Hour)
	if got := stepAll(t, s, 5); got != 1 {
		t.Fatalf("%d runs after an hour, want the live task's one", got)
	}
}

// TestFrozenRefusesChanges: between Freeze and Thaw the snapshot is taken
// or about to be: an Add, a Remove or a pause then would be missing from
// it, in the next process, so they are refused with ErrFrozen; after
// Thaw they work again.
func TestFrozenRefusesChanges(t *testing.T) {
	s, _ := newTest(t, Options{})
	mustKind(t, s, counterKind("count", newSeqLog()))
	mustAdd(t, s, Task{ID: "a", Kind: "count", Every: time.Hour})
	if err := s.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Add":    s.Add(Task{ID: "b", Kind: "count", Every: time.Hour}),
		"Remove": s.Remove("a"),
		"Pause":  s.Pause("a"),
		"RunNow": s.RunNow("a"),
	} {
		if !errors.Is(err, ErrFrozen) {
			t.Errorf("%s while frozen = %v, want ErrFrozen", name, err)
		}
	}
	snap := capture(t, s)
	s.Thaw()
	mustAdd(t, s, Task{ID: "b", Kind: "count", Every: time.Hour})
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	n, _ := newTest(t, Options{})
	mustKind(t, n, counterKind("count", newSeqLog()))
	restore(t, n, snap)
	if _, ok := n.Task("a"); !ok {
		t.Error("the snapshot lost a task")
	}
}

// TestSpecRoundTrip: every field of a data task's spec comes back; a
// field of a later release (an unknown tag) is skipped; damage is
// ErrCorrupt.
func TestSpecRoundTrip(t *testing.T) {
	in := Task{Every: 0, Cron: "*/5 * * * * *", TimeZone: "Asia/Tokyo", Jitter: time.Second, Policy: CatchUp,
		CatchUpLimit: -1, CatchUpSpacing: 2 * time.Second, Overlap: OverlapAllow, MaxConcurrent: 7, Timeout: time.Minute,
		Start: time.Unix(100, 5), End: time.Unix(200, 7), Args: []byte("customer-1")}
	b := encodeSpec(&in)
	b = binary.AppendUvarint(b, 99) // a later release's field
	b = binary.AppendUvarint(b, 3)
	b = append(b, 1, 2, 3)
	out, err := decodeSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Cron != in.Cron || out.TimeZone != in.TimeZone || out.Jitter != in.Jitter || out.Policy != in.Policy ||
		out.CatchUpLimit != in.CatchUpLimit || out.CatchUpSpacing != in.CatchUpSpacing || out.Overlap != in.Overlap || out.MaxConcurrent != in.MaxConcurrent ||
		out.Timeout != in.Timeout || !out.Start.Equal(in.Start) || !out.End.Equal(in.End) || string(out.Args) != "customer-1" {
		t.Errorf("decoded %+v, want %+v", out, in)
	}
	at := Task{At: time.Unix(0, 12345), Every: 0}
	if out, err := decodeSpec(encodeSpec(&at)); err != nil || !out.At.Equal(at.At) {
		t.Errorf("At: %v %v", out.At, err)
	}
	if _, err := decodeSpec(b[:len(b)-2]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated spec: %v, want ErrCorrupt", err)
	}
}

// TestDataLoopRoundTrip: a data task with no schedule is a loop; its
// empty spec survives a snapshot.
func TestDataLoopRoundTrip(t *testing.T) {
	started := make(chan string, 2)
	k := Kind{Name: "loop", Run: func(ctx context.Context, r *Run) error { started <- r.ID(); <-ctx.Done(); return nil }}
	a, _ := newTest(t, Options{})
	mustKind(t, a, k)
	mustAdd(t, a, Task{ID: "l", Kind: "loop"})
	b, _ := newTest(t, Options{})
	mustKind(t, b, k)
	restore(t, b, capture(t, a))
	if got := info(t, b, "l"); !got.Loop || !got.Data {
		t.Fatalf("restored %+v", got)
	}
	start(t, b)
	if id := waitFor(t, started, "the loop"); id != "l" {
		t.Fatal(id)
	}
}
