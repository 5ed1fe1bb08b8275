package worker

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestNextSlot(t *testing.T) {
	tests := []struct {
		name             string
		nominal, start   int64
		every            int64
		policy           Policy
		limit, spacing   int64 // CatchUpLimit and CatchUpSpacing; 0 is none
		wantNext         int64
		wantSkippedCount uint64
		wantNotBefore    int64 // 0: wantNext
	}{
		{name: "on time", nominal: 0, start: 3, every: 10, policy: SkipLate, wantNext: 10},
		{name: "started just before the next point", nominal: 0, start: 9, every: 10, policy: SkipLate, wantNext: 10},
		{name: "started at the next point", nominal: 0, start: 10, every: 10, policy: SkipLate, wantNext: 20, wantSkippedCount: 1},
		{name: "late run stands for the points it missed", nominal: 0, start: 35, every: 10, policy: SkipLate, wantNext: 40, wantSkippedCount: 3},
		{name: "catch up runs every point", nominal: 0, start: 35, every: 10, policy: CatchUp, wantNext: 10},
		{name: "catch up is spaced", nominal: 0, start: 35, every: 10, policy: CatchUp, limit: 10, spacing: 1, wantNext: 10, wantNotBefore: 36},
		{name: "catch up on time is not delayed", nominal: 0, start: 3, every: 10, policy: CatchUp, limit: 10, spacing: 1, wantNext: 10},
		{name: "catch up is limited", nominal: 0, start: 1000, every: 10, policy: CatchUp, limit: 10, spacing: 1,
			wantNext: 910, wantSkippedCount: 90, wantNotBefore: 1001},
		{name: "negative times", nominal: -100, start: -5, every: 10, policy: SkipLate, wantNext: 0, wantSkippedCount: 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := Task{Every: time.Duration(tt.every), Policy: tt.policy,
				CatchUpLimit: int(tt.limit), CatchUpSpacing: time.Duration(tt.spacing)}
			sl := nextSlot(tt.nominal, tt.start, &spec)
			notBefore := tt.wantNotBefore
			if notBefore == 0 {
				notBefore = tt.wantNext
			}
			if sl.next != tt.wantNext || sl.skipped != tt.wantSkippedCount || sl.notBefore != notBefore {
				t.Errorf("nextSlot(%d, %d, %d, %v) = %+v; want next %d, skipped %d, not before %d",
					tt.nominal, tt.start, tt.every, tt.policy, sl, tt.wantNext, tt.wantSkippedCount, notBefore)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		n            uint64
		initial, max time.Duration
		want         time.Duration
	}{
		{n: 0, initial: 100 * ms, max: time.Second, want: 0},
		{n: 1, initial: 100 * ms, max: time.Second, want: 100 * ms},
		{n: 2, initial: 100 * ms, max: time.Second, want: 200 * ms},
		{n: 4, initial: 100 * ms, max: time.Second, want: 800 * ms},
		{n: 5, initial: 100 * ms, max: time.Second, want: time.Second},
		{n: 1 << 40, initial: 100 * ms, max: time.Second, want: time.Second},
		{n: 70, initial: 1, max: 1<<63 - 1, want: 1<<63 - 1},
		{n: 3, initial: time.Second, max: time.Second, want: time.Second},
	}
	for _, tt := range tests {
		if got := backoff(tt.n, tt.initial, tt.max); got != tt.want {
			t.Errorf("backoff(%d, %v, %v) = %v, want %v", tt.n, tt.initial, tt.max, got, tt.want)
		}
	}
}

func TestWakeAt(t *testing.T) {
	tests := []struct{ due, res, want int64 }{
		{due: 0, res: 10, want: 0},
		{due: 1, res: 10, want: 10},
		{due: 10, res: 10, want: 10},
		{due: 19, res: 10, want: 20},
		{due: -5, res: 10, want: 0},
		{due: -15, res: 10, want: -10},
		{due: 7, res: 1, want: 7},
	}
	for _, tt := range tests {
		if got := wakeAt(tt.due, tt.res); got != tt.want {
			t.Errorf("wakeAt(%d, %d) = %d, want %d", tt.due, tt.res, got, tt.want)
		}
	}
}

func TestJitterInRange(t *testing.T) {
	for range 1000 {
		if j := jitter(10); j < 0 || j >= 10 {
			t.Fatalf("jitter(10) = %d", j)
		}
	}
	if j := jitter(0); j != 0 {
		t.Fatalf("jitter(0) = %d", j)
	}
}

func TestTaskHeapOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 5, 17, 500} {
		var (
			h   taskHeap
			all []*task
		)
		add := func(due int64) {
			t := &task{due: due, idx: uint32(len(all))}
			all = append(all, t)
			h.push(t, t.due)
		}
		for range n {
			add(r.Int64N(100))
		}
		// Change due times and rebuild, as Restore does.
		for i := range h.ents[:n/3] {
			tk := h.ents[i].task(all)
			tk.due = r.Int64N(100)
			h.ents[i].due = tk.due
		}
		h.init()
		// Interleave pushes with pops.
		prev := int64(-1)
		for i := 0; h.len() > 0; i++ {
			tk := h.pop(all)
			if tk.due < prev {
				t.Fatalf("n=%d: popped due %d after %d", n, tk.due, prev)
			}
			prev = tk.due
			if i%3 == 0 && i < n {
				add(prev + r.Int64N(50))
			}
		}
	}
}

// TestRemovedTasksLeaveQueue checks the lazy removal: removed tasks are
// skipped at the top of the queue and never dispatched.
func TestRemovedTasksLeaveQueue(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	ran := map[string]int{}
	for i := range 10 {
		id := itoa(i)
		mustAdd(t, s, Task{ID: id, Every: time.Duration(i+1) * time.Second, Run: func(context.Context, *Run) error {
			ran[id]++
			return nil
		}})
	}
	for _, id := range []string{"0", "3", "9"} {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(10 * time.Second)
	stepAll(t, s, 100)
	for i := range 10 {
		id := itoa(i)
		if removed := id == "0" || id == "3" || id == "9"; removed != (ran[id] == 0) {
			t.Fatalf("task %s ran %d times (removed: %v)", id, ran[id], removed)
		}
	}
	now := s.mono(clk.Now())
	for _, e := range s.q.ents {
		if e.task(s.all) == nil && e.due <= now {
			t.Fatalf("stale entry at position %d still queued after its due time", e.pos)
		}
	}
}

// TestMovedTaskStaysQueued removes tasks so that the last registered one
// moves into their place in Supervisor.all, where the queue names tasks:
// a queued task that moves keeps its schedule, and one that moves while
// its run is in flight (it removes the others itself) is queued once when
// the run ends, not twice. One-off tasks, dropped after their run, move
// the last one too.
func TestMovedTaskStaysQueued(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	ran := map[string]int{}
	count := func(id string) RunFunc {
		return func(context.Context, *Run) error { ran[id]++; return nil }
	}
	for _, id := range []string{"a", "b", "c"} {
		// b is removed by mover's first run, before its first point.
		mustAdd(t, s, Task{ID: id, Every: time.Second * time.Duration(1+2*btoi(id == "b")), Run: count(id)})
	}
	inFlight := 0
	mustAdd(t, s, Task{ID: "mover", Every: 2 * time.Second, Run: func(context.Context, *Run) error {
		inFlight++
		defer func() { inFlight-- }()
		if inFlight > 1 {
			t.Errorf("mover's run %d started while its run %d is in flight", ran["mover"]+1, ran["mover"])
		}
		ran["mover"]++
		if ran["mover"] == 1 {
			// In flight, and last in all: it moves to b's place.
			if err := s.Remove("b"); err != nil {
				return err
			}
			// Whatever is due now runs, as other runners would take
			// it: not mover, whose run is in flight.
			for step(s) != "" {
			}
		}
		return nil
	}})
	for i := range 3 {
		mustAdd(t, s, Task{ID: "once" + itoa(i), At: clk.Now().Add(500 * time.Millisecond), Run: count("once" + itoa(i))})
	}
	mustAdd(t, s, Task{ID: "last", Every: 4 * time.Second, Run: count("last")})
	if err := s.Remove("a"); err != nil { // "last" moves to a's place, queued
		t.Fatal(err)
	}
	for range 16 {
		clk.Advance(500 * time.Millisecond)
		stepAll(t, s, 100)
	}
	want := map[string]int{"a": 0, "b": 0, "c": 8, "mover": 4, "once0": 1, "once1": 1, "once2": 1, "last": 2}
	for id, n := range want {
		if ran[id] != n {
			t.Errorf("%s ran %d times, want %d (all: %v)", id, ran[id], n, ran)
		}
	}
	if got := s.Stats().Tasks; got != 3 {
		t.Errorf("%d tasks registered, want c, mover and last", got)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
