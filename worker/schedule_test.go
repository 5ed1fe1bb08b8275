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
		var h taskHeap
		for range n {
			t := &task{due: r.Int64N(100)}
			h.push(t, t.due)
		}
		// Change due times and rebuild, as Restore does.
		for i := range h[:n/3] {
			h[i].t.due = r.Int64N(100)
			h[i].due = h[i].t.due
		}
		h.init()
		// Interleave pushes with pops.
		prev := int64(-1)
		for i := 0; len(h) > 0; i++ {
			tk := h.pop()
			if tk.due < prev {
				t.Fatalf("n=%d: popped due %d after %d", n, tk.due, prev)
			}
			prev = tk.due
			if i%3 == 0 && i < n {
				t := &task{due: prev + r.Int64N(50)}
				h.push(t, t.due)
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
	for _, e := range s.q {
		if e.t.removed {
			t.Fatalf("removed task %s still queued after its due time", e.t.id)
		}
	}
}
