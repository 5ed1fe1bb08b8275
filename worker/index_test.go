package worker

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestTaskIndex adds, removes (moving the last task into the hole, as
// dropLocked does) and looks up IDs at random, against a map, through
// several growths of the table and its wrap-around.
func TestTaskIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		x    taskIndex
		all  []*task
		want = map[string]*task{}
	)
	check := func(id string) {
		t.Helper()
		if got := x.get(all, id); got != want[id] {
			t.Fatalf("get(%q) = %v, want %v", id, got, want[id])
		}
		if got := x.getBytes(all, []byte(id)); got != want[id] {
			t.Fatalf("getBytes(%q) = %v, want %v", id, got, want[id])
		}
	}
	for step := range 40000 {
		id := fmt.Sprintf("t%d", rng.IntN(6000))
		switch tk := want[id]; {
		case tk == nil && rng.IntN(3) > 0:
			tk = &task{id: id, idx: uint32(len(all))}
			all = append(all, tk)
			x.add(all, tk)
			want[id] = tk
		case tk != nil && rng.IntN(2) == 0:
			all = removeIndexed(&x, all, tk)
			delete(want, id)
		}
		check(id)
		check(fmt.Sprintf("t%d", rng.IntN(6000)))
		if step%5000 == 0 {
			for id := range want {
				check(id)
			}
			if x.n != len(all) {
				t.Fatalf("n = %d, want %d", x.n, len(all))
			}
		}
	}
	if len(x.slots)*3 < x.n*4 {
		t.Fatalf("%d slots for %d tasks: over 3/4 full", len(x.slots), x.n)
	}
}

// TestTaskIndexTagCollisions makes every ID share its home slot's
// neighbourhood and tag bits with others: a table of 16 slots holds 12
// tasks, and removals in any order keep every other one findable.
func TestTaskIndexTagCollisions(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var (
			x   taskIndex
			all []*task
		)
		for i := range 12 {
			tk := &task{id: fmt.Sprintf("id-%d-%d", seed, i), idx: uint32(len(all))}
			all = append(all, tk)
			x.add(all, tk)
		}
		for len(all) > 0 {
			tk := all[rng.IntN(len(all))]
			all = removeIndexed(&x, all, tk)
			if x.get(all, tk.id) != nil {
				t.Fatalf("seed %d: removed %q still found", seed, tk.id)
			}
			for _, o := range all {
				if x.get(all, o.id) != o {
					t.Fatalf("seed %d: %q lost after removing %q", seed, o.id, tk.id)
				}
			}
		}
	}
}

// removeIndexed removes tk from all and x as dropLocked does: the last
// task moves into its place.
func removeIndexed(x *taskIndex, all []*task, tk *task) []*task {
	x.remove(all, tk)
	last := all[len(all)-1]
	from := last.idx
	all[tk.idx], last.idx = last, tk.idx
	all = all[:len(all)-1]
	if last != tk {
		x.moved(last, from)
	}
	return all
}

// TestTaskRecordSize keeps the task record and the queue entry within
// the sizes the steady memory per task (BenchmarkScale/memory) counts on:
// a field added to the record that most tasks do not use belongs in
// coldTask, or the record moves to the next size class (128 bytes).
func TestTaskRecordSize(t *testing.T) {
	if got := unsafe.Sizeof(task{}); got > 112 {
		t.Errorf("task record is %d bytes, over its 112-byte size class", got)
	}
	if got := unsafe.Sizeof(qent{}); got != 16 {
		t.Errorf("queue entry is %d bytes, want 16", got)
	}
}
