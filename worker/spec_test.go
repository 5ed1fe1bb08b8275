package worker

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"
)

// TestSpecKeyCoversTask: two tasks share a spec only if every field but
// the ID is equal, so specKey must have every field of Task but the ID. A
// field added to Task and not to specKey fails here.
func TestSpecKeyCoversTask(t *testing.T) {
	key := reflect.TypeFor[specKey]()
	for f := range reflect.TypeFor[Task]().Fields() {
		if f.Name == "ID" {
			continue
		}
		if _, ok := key.FieldByName(f.Name); !ok {
			t.Errorf("specKey has no field %s: tasks differing in it would share a spec", f.Name)
		}
	}
}

// TestSharedSpecs: tasks added one after the other that differ only by ID
// share one spec and still run as themselves: each run sees its own ID,
// and a task with a different func or option has a spec of its own.
func TestSharedSpecs(t *testing.T) {
	clk := newFakeClock()
	s, _ := newTest(t, Options{now: clk.Now})
	var mu sync.Mutex
	seen := map[string]string{}
	body := func(name string) RunFunc {
		return func(_ context.Context, r *Run) error {
			mu.Lock()
			seen[r.ID()] = name + ":" + string(r.Args())
			mu.Unlock()
			return nil
		}
	}
	f, g := body("f"), body("g")
	mustAdd(t, s,
		Task{ID: "a", Every: time.Second, Run: f},
		Task{ID: "b", Every: time.Second, Run: f},
		Task{ID: "c", Every: time.Second, Run: g},                    // another closure
		Task{ID: "d", Every: time.Second, Run: g, Args: []byte("x")}, // other Args
		Task{ID: "e", Every: time.Second, Run: g, Args: []byte("x")},
	)
	sp := func(id string) *Task { return s.byID.get(s.all, id).spec }
	if sp("a") != sp("b") || sp("d") != sp("e") {
		t.Error("tasks that differ only by ID do not share their spec")
	}
	if sp("b") == sp("c") || sp("c") == sp("d") {
		t.Error("tasks that differ by Run or Args share a spec")
	}
	if sp("a").ID != "" {
		t.Errorf("a shared spec keeps the ID %q", sp("a").ID)
	}
	clk.Advance(time.Second)
	stepAll(t, s, 10)
	want := map[string]string{"a": "f:", "b": "f:", "c": "g:", "d": "g:x", "e": "g:x"}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("runs saw %v, want %v", seen, want)
	}
	for id := range want {
		if ti := info(t, s, id); ti.ID != id {
			t.Errorf("TaskInfo of %s says ID %q", id, ti.ID)
		}
	}
}

// TestSharedSpecsInterleaved: tasks of a few shapes added in turn, with
// one-off tasks (each a shape of its own) among them, share a spec per
// shape, as a service's mix of customers' tasks is registered.
func TestSharedSpecsInterleaved(t *testing.T) {
	s, _ := newTest(t, Options{})
	at := time.Now().Add(time.Hour)
	for i := range 12 {
		tk := Task{ID: "t" + itoa(i), Run: nop}
		switch i % 4 {
		case 0:
			tk.Every = time.Second
		case 1:
			tk.Every = time.Minute
		case 2:
			tk.Cron, tk.TimeZone = "*/15 * * * *", "Europe/Paris"
		case 3:
			tk.At = at.Add(time.Duration(i) * time.Second)
		}
		mustAdd(t, s, tk)
	}
	sp := func(i int) *Task { return s.byID.get(s.all, "t"+itoa(i)).spec }
	for i := 4; i < 12; i++ {
		if shared := sp(i) == sp(i%4); shared != (i%4 != 3) {
			t.Errorf("task %d shares the spec of task %d: %v, want %v", i, i%4, shared, i%4 != 3)
		}
	}
}
