package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"
	"unsafe"
)

// dataKindV2 is a kind whose state is at version 2, read from 1 by no
// migration: a record at version 1 with state fails the restore.
func dataKindV2() Kind {
	return Kind{Name: "k", Version: 2, Run: func(_ context.Context, r *Run) error {
		return r.Checkpoint(fmt.Appendf(nil, "%d", r.Seq()))
	}}
}

// ranDataTasks returns the snapshot of a supervisor with n data tasks of
// dataKindV2 that differ only by ID, and two with Args of their own, all
// run once.
func ranDataTasks(t *testing.T, clk *fakeClock, n int) []byte {
	t.Helper()
	s, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, s, dataKindV2())
	for i := range n {
		mustAdd(t, s, Task{ID: fmt.Sprintf("t-%04d", i), Kind: "k", Every: 10 * time.Second, Jitter: time.Second, Policy: CatchUp})
	}
	mustAdd(t, s, Task{ID: "args-1", Kind: "k", Every: 10 * time.Second, Args: []byte("one")},
		Task{ID: "args-2", Kind: "k", Every: 10 * time.Second, Args: []byte("two")})
	clk.Advance(12 * time.Second)
	stepAll(t, s, 2*n+10)
	return capture(t, s)
}

// inChunks reports whether b lies in one of the snapshot's chunks.
func inChunks(snap *snapshot, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for _, c := range snap.chunks {
		start := uintptr(unsafe.Pointer(unsafe.SliceData(c)))
		if p >= start && p < start+uintptr(len(c)) {
			return true
		}
	}
	return false
}

// TestRestoredDataTasksKeepNoChunk: the data tasks a restore creates
// share the spec of the tasks that differ from them only by ID, and keep
// nothing of the snapshot's chunks (spec bytes, Args, state): a chunk of
// 64 KiB is not kept alive by a few bytes of each of its tasks, which at
// a million tasks kept the whole snapshot in memory for as long as the
// tasks lived.
func TestRestoredDataTasksKeepNoChunk(t *testing.T) {
	clk := newFakeClock()
	const n = 3000 // several chunks
	b := ranDataTasks(t, clk, n)
	snap, err := readSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.chunks) < 2 {
		t.Fatalf("%d chunks, want several", len(snap.chunks))
	}
	s, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, s, dataKindV2())
	s.mu.Lock()
	plan, err := s.planRestoreLocked(snap)
	if err == nil {
		s.applyRestoreLocked(snap, &plan)
	}
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stats().Tasks; got != n+2 {
		t.Fatalf("%d tasks restored, want %d", got, n+2)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.byID["t-0000"]
	for id, tk := range s.byID {
		if !tk.data || tk.runs != 1 {
			t.Fatalf("task %s: data %v, runs %d", id, tk.data, tk.runs)
		}
		if inChunks(snap, tk.specBytes) || inChunks(snap, tk.state) || inChunks(snap, tk.spec.Args) {
			t.Fatalf("task %s keeps a chunk of the snapshot: spec bytes %v, state %v, args %v", id,
				inChunks(snap, tk.specBytes), inChunks(snap, tk.state), inChunks(snap, tk.spec.Args))
		}
		if len(id) == 6 && id[:2] == "t-" && (tk.spec != first.spec || !sameBytes(tk.specBytes, first.specBytes)) {
			t.Fatalf("task %s has a spec of its own; tasks that differ only by ID share one", id)
		}
	}
	for _, id := range []string{"args-1", "args-2"} {
		tk := s.byID[id]
		if tk.spec == first.spec || string(tk.spec.Args) != "one" && string(tk.spec.Args) != "two" {
			t.Fatalf("task %s: args %q, shared spec %v", id, tk.spec.Args, tk.spec == first.spec)
		}
	}
}

// snapshotOf encodes recs as a snapshot, as Capture would, but as given:
// damaged or duplicated records included.
func snapshotOf(recs []record) []byte {
	var buf bytes.Buffer
	buf.Write(snapshotMagic[:])
	cw := chunkWriter{w: &buf}
	b := binary.AppendVarint(nil, time.Unix(1_700_000_000, 0).UnixNano())
	b = binary.AppendVarint(b, 0)
	for range 5 {
		b = binary.AppendUvarint(b, 0)
	}
	cw.buf = binary.AppendUvarint(b, uint64(len(recs)))
	cw.flush()
	for i := range recs {
		cw.buf = appendRecord(cw.buf, &recs[i])
	}
	cw.flush()
	buf.WriteByte(0)
	return buf.Bytes()
}

// TestRestoreDataTasksAllOrNothing: a snapshot with the same data task
// twice, or whose last record's state cannot be read, restores nothing,
// whether the supervisor registers tasks by ID (each ID is looked up) or
// none (the restore spares the lookups and finds the second record by
// its insert): the data tasks created for the earlier records are gone,
// their IDs free, and the good records restore afterwards.
func TestRestoreDataTasksAllOrNothing(t *testing.T) {
	clk := newFakeClock()
	good, err := readSnapshot(bytes.NewReader(ranDataTasks(t, clk, 50)))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := good.records()
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		recs[i].id = string(recs[i].idb)
	}
	unreadable := recs[3]
	unreadable.id = "unreadable"
	unreadable.version = 1 // with state, and no migration from 1 to 2
	for _, tc := range []struct {
		name    string
		recs    []record
		wantErr error
	}{
		{"duplicate", append(recs[:len(recs):len(recs)], recs[7]), ErrCorrupt},
		{"unreadable state", append(recs[:len(recs):len(recs)], unreadable), ErrStateVersion},
	} {
		for _, byID := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/registered=%v", tc.name, byID), func(t *testing.T) {
				s, _ := newTest(t, Options{now: clk.Now})
				mustKind(t, s, dataKindV2())
				want := 0
				if byID {
					mustAdd(t, s, Task{ID: "by-id", Every: time.Second, Run: nop})
					want = 1
				}
				err := s.Restore(bytes.NewReader(snapshotOf(tc.recs)))
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Restore: %v, want %v", err, tc.wantErr)
				}
				if got := s.Stats().Tasks; got != want {
					t.Fatalf("%d tasks after the failed restore, want %d", got, want)
				}
				if _, ok := s.Task(string(recs[0].idb)); ok {
					t.Fatal("a data task of the failed restore is registered")
				}
				s.mu.Lock()
				left := len(s.byID)
				s.mu.Unlock()
				if left != want {
					t.Fatalf("%d IDs in byID after the failed restore, want %d", left, want)
				}
				restore(t, s, snapshotOf(recs))
				if got := s.Stats().Tasks; got != want+len(recs) {
					t.Fatalf("%d tasks after the good restore, want %d", got, want+len(recs))
				}
			})
		}
	}
}

// TestResetUndoesDataRestore: Reset after a restore of data tasks alone,
// into a supervisor that registers none, leaves it empty, and the same
// snapshot restores again.
func TestResetUndoesDataRestore(t *testing.T) {
	clk := newFakeClock()
	b := ranDataTasks(t, clk, 100)
	s, _ := newTest(t, Options{now: clk.Now})
	mustKind(t, s, dataKindV2())
	restore(t, s, b)
	if got := s.Stats().Tasks; got != 102 {
		t.Fatalf("%d tasks restored, want 102", got)
	}
	s.Reset()
	st := s.Stats()
	s.mu.Lock()
	left, queued := len(s.byID), len(s.q)
	s.mu.Unlock()
	if st.Tasks != 0 || st.RunsTotal != 0 || left != 0 || queued != 0 {
		t.Fatalf("after Reset: %d tasks, %d runs, %d IDs, %d queued", st.Tasks, st.RunsTotal, left, queued)
	}
	restore(t, s, b)
	if ti := info(t, s, "t-0042"); ti.Runs != 1 || s.Stats().Tasks != 102 {
		t.Fatalf("after the second restore: %+v, %d tasks", ti, s.Stats().Tasks)
	}
}
