package worker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
)

// The scale benchmarks measure each step of a task handover at 1k, 10k,
// 100k and, with BATON_SCALE=1, 1M tasks shaped like baton-demo's: a kind,
// a state version, CatchUp, every 10 s with 10 s of jitter, and a checkpointed
// JSON counter. Each step is its own sub-benchmark, so that a profile
// (-cpuprofile, -memprofile) of one -bench pattern is the profile of that
// step:
//
//	go test ./worker -run '^$' -bench 'Scale/.*/tasks=100000' -benchmem
//	BATON_SCALE=1 go test ./worker -run '^$' -bench 'Scale/restore/tasks=1000000' -benchtime 3x -cpuprofile cpu.out
//
// register: Add of n tasks, what the new binary does before Restore.
// restore-data: the same tasks as data of a registered kind, restored
// into a supervisor that registers the kind only: no Add, Restore
// creates the tasks (register + restore against restore-data is what
// tasks as data spare the new process).
// capture: Capture (the encode) into memory. decode: the parse of the
// snapshot alone. restore: Restore into a supervisor holding the n
// registered tasks. send: the section through state.Send and
// state.Receive on a socket pair (a sealed memfd on Linux), the
// receiving registry's Restore included. memory: the heap per task of a
// supervisor whose every task has run once (the steady memory per task).
func BenchmarkScale(b *testing.B) {
	sizes := []int{1_000, 10_000, 100_000}
	if os.Getenv("BATON_SCALE") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, step := range []struct {
		name string
		fn   func(*testing.B, int)
	}{
		{"register", benchRegister},
		{"capture", benchScaleCapture},
		{"decode", benchScaleDecode},
		{"restore", benchScaleRestore},
		{"restore-data", benchScaleRestoreData},
		{"send", benchScaleSend},
		{"memory", benchScaleMemory},
	} {
		b.Run(step.name, func(b *testing.B) {
			for _, n := range sizes {
				b.Run("tasks="+strconv.Itoa(n), func(b *testing.B) { step.fn(b, n) })
			}
		})
	}
}

// scaleClock is the fake clock of the scale benchmarks: shared so that a
// restore sees the capture's wall clock.
var scaleClock = newFakeClock()

// scaleKind is the demo's task kind: a JSON counter at state version 2,
// migrated from 1.
func scaleKind(b *testing.B) Kind {
	b.Helper()
	mig := new(state.Migrations)
	if err := mig.Add(1, 2, func(p []byte) ([]byte, error) { return p, nil }); err != nil {
		b.Fatal(err)
	}
	run := func(_ context.Context, r *Run) error {
		return r.Checkpoint(fmt.Appendf(nil, `{"count":%d}`, r.Seq()))
	}
	return Kind{Name: "demo.counter", Version: 2, Migrations: mig, Run: run}
}

// scaleSupervisor returns a new supervisor, with scaleKind registered
// for data.
func scaleSupervisor(b *testing.B, data bool) *Supervisor {
	b.Helper()
	s, err := New(Options{now: scaleClock.Now})
	if err != nil {
		b.Fatal(err)
	}
	if data {
		if err := s.RegisterKind(scaleKind(b)); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// scaleTasks registers n demo-like tasks in a new supervisor.
func scaleTasks(b *testing.B, n int) *Supervisor {
	b.Helper()
	s := scaleSupervisor(b, false)
	k := scaleKind(b)
	for i := range n {
		t := Task{ID: fmt.Sprintf("task-%05d", i), Kind: k.Name, Version: k.Version, Migrations: k.Migrations,
			Every: 10 * time.Second, Jitter: 10 * time.Second, Policy: CatchUp, Run: k.Run}
		if err := s.Add(t); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// scaleDataTasks adds n demo-like data tasks of scaleKind to a new
// supervisor.
func scaleDataTasks(b *testing.B, n int) *Supervisor {
	b.Helper()
	s := scaleSupervisor(b, true)
	for i := range n {
		t := Task{ID: fmt.Sprintf("task-%05d", i), Kind: "demo.counter", Every: 10 * time.Second, Jitter: 10 * time.Second, Policy: CatchUp}
		if err := s.Add(t); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// ranScaleTasks returns a supervisor whose n tasks have each run once,
// and its snapshot. Cached per n: building 1M tasks takes seconds.
func ranScaleTasks(b *testing.B, n int) (*Supervisor, []byte) {
	b.Helper()
	return ranScale(b, n, scaleTasks)
}

// scaleDataSnapshot is the snapshot of n tasks of scaleDataTasks that
// each ran once. The supervisor is not kept: a new process has no other
// heap than what it restores, for the collector to mark again and again.
func scaleDataSnapshot(b *testing.B, n int) []byte {
	b.Helper()
	if c, ok := scaleCache[-n]; ok {
		return c.snap
	}
	_, snap := ranScale(b, -n, func(b *testing.B, n int) *Supervisor { return scaleDataTasks(b, -n) })
	scaleCache[-n] = scaleEntry{snap: snap}
	return snap
}

// ranScale runs once each of the tasks build(n) adds, and captures them;
// cached by n, one n at a time.
func ranScale(b *testing.B, n int, build func(*testing.B, int) *Supervisor) (*Supervisor, []byte) {
	if c, ok := scaleCache[n]; ok {
		return c.s, c.snap
	}
	clear(scaleCache) // first: the old entry's memory is free while building
	s := build(b, n)
	scaleClock.Advance(20 * time.Second)
	for step(s) != "" {
	}
	if err := s.Freeze(context.Background()); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Capture(&buf); err != nil {
		b.Fatal(err)
	}
	scaleCache[n] = scaleEntry{s, buf.Bytes()}
	return s, buf.Bytes()
}

type scaleEntry struct {
	s    *Supervisor
	snap []byte
}

var scaleCache = map[int]scaleEntry{}

func perTask(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/task")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
}

func benchRegister(b *testing.B, n int) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
		scaleTasks(b, n)
	}
	perTask(b, n)
}

func benchScaleCapture(b *testing.B, n int) {
	s, snap := ranScaleTasks(b, n)
	var buf bytes.Buffer
	buf.Grow(len(snap))
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := s.Capture(&buf); err != nil {
			b.Fatal(err)
		}
	}
	perTask(b, n)
	b.ReportMetric(float64(len(snap))/float64(n), "bytes/task")
}

func benchScaleDecode(b *testing.B, n int) {
	_, snap := ranScaleTasks(b, n)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readSnapshot(bytes.NewReader(snap)); err != nil {
			b.Fatal(err)
		}
	}
	perTask(b, n)
}

func benchScaleRestore(b *testing.B, n int) {
	_, snap := ranScaleTasks(b, n)
	benchRestoreInto(b, n, snap, func() *Supervisor { return scaleTasks(b, n) })
}

// benchScaleRestoreData restores n data tasks into a supervisor that
// registers their kind only.
func benchScaleRestoreData(b *testing.B, n int) {
	benchRestoreInto(b, n, scaleDataSnapshot(b, n), func() *Supervisor { return scaleSupervisor(b, true) })
}

// benchRestoreInto times the Restore of snap, n tasks, into the
// supervisor that each call of fresh returns. added-heap-bytes/task is
// the heap in use after Restore beyond the fresh supervisor's, before any
// collection: what the restore adds to the peak; kept-heap-bytes/task is
// what is left of it after a collection: what the restore keeps, the
// tasks it created included, and anything of the snapshot they keep
// alive.
func benchRestoreInto(b *testing.B, n int, snap []byte, fresh func() *Supervisor) {
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	var peak, kept uint64
	for b.Loop() {
		b.StopTimer()
		s2 := fresh()
		runtime.GC()
		before := heapInUse()
		b.StartTimer()
		if err := s2.Restore(bytes.NewReader(snap)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		peak = max(peak, heapInUse()-before)
		if got := s2.Stats().Tasks; got != n {
			b.Fatalf("restored %d tasks, want %d", got, n)
		}
		runtime.GC()
		kept = max(kept, heapInUse()-before)
		runtime.KeepAlive(s2)
		b.StartTimer()
	}
	perTask(b, n)
	b.ReportMetric(float64(peak)/float64(n), "added-heap-bytes/task")
	b.ReportMetric(float64(kept)/float64(n), "kept-heap-bytes/task")
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// benchScaleSend sends the supervisor's section from one registry to
// another over a Unix socket pair, as an upgrade does (without the
// freeze, done once).
func benchScaleSend(b *testing.B, n int) {
	s, snap := ranScaleTasks(b, n)
	from, err := state.NewRegistry(state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Register(from); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s2 := scaleTasks(b, n)
		to, err := state.NewRegistry(state.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s2.Register(to); err != nil {
			b.Fatal(err)
		}
		c1, c2 := unixPair(b)
		runtime.GC()
		b.StartTimer()
		errc := make(chan error, 1)
		go func() {
			_, err := state.Send(context.Background(), c1, from)
			errc <- err
		}()
		if _, err := state.Receive(context.Background(), c2, to); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c1.Close()
		c2.Close()
		if got := s2.Stats().Tasks; got != n {
			b.Fatalf("restored %d tasks, want %d", got, n)
		}
		b.StartTimer()
	}
	perTask(b, n)
}

func unixPair(b *testing.B) (*net.UnixConn, *net.UnixConn) {
	b.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			b.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// benchScaleMemory reports the heap per task of n tasks that each ran
// once and checkpointed their state, as a steady process holds them.
func benchScaleMemory(b *testing.B, n int) {
	for b.Loop() {
		clear(scaleCache)
		runtime.GC()
		before := heapInUse()
		s := scaleTasks(b, n)
		scaleClock.Advance(20 * time.Second)
		for step(s) != "" {
		}
		runtime.GC()
		after := heapInUse()
		b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/task")
		runtime.KeepAlive(s)
	}
	b.ReportMetric(0, "ns/op")
}
