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
// capture: Capture (the encode) into memory. decode: the parse of the
// snapshot alone. restore: Restore into a supervisor holding the n
// registered tasks. send: the section through state.Send and
// state.Receive on a socket pair (a sealed memfd on Linux), the
// receiving registry's Restore included. memory: the heap per task of a
// supervisor whose every task has run once (the steady memory per task).
//
// The pre-copy steps (precopy.go): precopy-capture, the first round, in
// slices (max-hold-us is the longest hold of the lock, what dispatch may
// wait); precopy-restore, its restore in the new process; both happen
// while the old process runs. Inside the pause: delta-N%, Delta after
// Freeze with N% of the tasks changed since the first round, and
// restore-delta-N%, RestoreDelta of it over the restored base, the queue
// included. Compare them with capture and restore, the one-round pause.
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
		{"send", benchScaleSend},
		{"memory", benchScaleMemory},
		{"precopy-capture", benchPreCopyCapture},
		{"precopy-restore", benchPreCopyRestore},
		{"delta-1%", func(b *testing.B, n int) { benchDelta(b, n, 100) }},
		{"delta-10%", func(b *testing.B, n int) { benchDelta(b, n, 10) }},
		{"restore-delta-1%", func(b *testing.B, n int) { benchRestoreDelta(b, n, 100) }},
		{"restore-delta-10%", func(b *testing.B, n int) { benchRestoreDelta(b, n, 10) }},
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

// scaleTasks registers n demo-like tasks in a new supervisor.
func scaleTasks(b *testing.B, n int) *Supervisor {
	b.Helper()
	s, err := New(Options{now: scaleClock.Now})
	if err != nil {
		b.Fatal(err)
	}
	mig := new(state.Migrations)
	if err := mig.Add(1, 2, func(p []byte) ([]byte, error) { return p, nil }); err != nil {
		b.Fatal(err)
	}
	run := func(_ context.Context, r *Run) error {
		return r.Checkpoint(fmt.Appendf(nil, `{"count":%d}`, r.Seq()))
	}
	for i := range n {
		t := Task{ID: fmt.Sprintf("task-%05d", i), Kind: "demo.counter", Version: 2, Migrations: mig,
			Every: 10 * time.Second, Jitter: 10 * time.Second, Policy: CatchUp, Run: run}
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
	if c, ok := scaleCache[n]; ok {
		return c.s, c.snap
	}
	s := scaleTasks(b, n)
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
	clear(scaleCache) // keep one size in memory at a time
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
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		b.StopTimer()
		s2 := scaleTasks(b, n)
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
		b.StartTimer()
	}
	perTask(b, n)
	// Heap in use after Restore beyond the registered supervisor's,
	// before any collection: what the restore adds to the peak.
	b.ReportMetric(float64(peak)/float64(n), "added-heap-bytes/task")
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

// holdWriter times the gaps between the writes of a first round: the
// slices encoded under the lock.
type holdWriter struct {
	buf     bytes.Buffer
	last    time.Time
	maxHold time.Duration
	// held sums the gaps; chunks counts the chunks' bodies (the writes
	// of more than 1 KiB), each one slice.
	held   time.Duration
	chunks int
}

func (w *holdWriter) Write(p []byte) (int, error) {
	now := time.Now()
	if !w.last.IsZero() {
		w.maxHold = max(w.maxHold, now.Sub(w.last))
		w.held += now.Sub(w.last)
	}
	if len(p) > 1024 {
		w.chunks++
	}
	n, err := w.buf.Write(p)
	w.last = time.Now()
	return n, err
}

func benchPreCopyCapture(b *testing.B, n int) {
	s, snap := ranScaleTasks(b, n)
	w := new(holdWriter)
	w.buf.Grow(len(snap))
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	var maxHold, held time.Duration
	chunks := 0
	for b.Loop() {
		w.buf.Reset()
		w.last, w.maxHold, w.held, w.chunks = time.Time{}, 0, 0, 0
		if err := s.preCopyCapture(w); err != nil {
			b.Fatal(err)
		}
		maxHold = max(maxHold, w.maxHold)
		held, chunks = held+w.held, chunks+w.chunks
	}
	s.preCopyStop()
	perTask(b, n)
	// The longest hold includes the scheduler's preemptions of a loaded
	// machine; the mean is the slice's cost.
	b.ReportMetric(float64(maxHold.Microseconds()), "max-hold-us")
	b.ReportMetric(float64(held.Microseconds())/float64(max(chunks, 1)), "mean-hold-us")
}

// preCopyStreams returns a first round of the n ran tasks and a delta in
// which every every-th task changed, cached.
func preCopyStreams(b *testing.B, n, every int) (base, delta []byte) {
	b.Helper()
	s, _ := ranScaleTasks(b, n)
	key := [2]int{n, every}
	if c, ok := preCopyCache[key]; ok {
		return c[0], c[1]
	}
	var bb, db bytes.Buffer
	if err := s.preCopyCapture(&bb); err != nil {
		b.Fatal(err)
	}
	markEvery(s, every)
	if err := s.preCopyDelta(&db); err != nil {
		b.Fatal(err)
	}
	clear(preCopyCache)
	preCopyCache[key] = [2][]byte{bb.Bytes(), db.Bytes()}
	return bb.Bytes(), db.Bytes()
}

var preCopyCache = map[[2]int][2][]byte{}

// markEvery marks every every-th task of s changed since a first round,
// starting the tracking if need be.
func markEvery(s *Supervisor, every int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pc == nil {
		s.pc = &preCopy{}
	}
	for i := 0; i < len(s.all); i += every {
		s.markLocked(s.all[i])
	}
}

func benchPreCopyRestore(b *testing.B, n int) {
	base, _ := preCopyStreams(b, n, 100)
	b.SetBytes(int64(len(base)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s2 := scaleTasks(b, n)
		runtime.GC()
		b.StartTimer()
		if err := s2.preCopyRestore(bytes.NewReader(base)); err != nil {
			b.Fatal(err)
		}
	}
	perTask(b, n)
}

// benchDelta times Delta, after Freeze, with one task in every changed.
func benchDelta(b *testing.B, n, every int) {
	s, _ := ranScaleTasks(b, n) // frozen
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		markEvery(s, every)
		buf.Reset()
		b.StartTimer()
		if err := s.preCopyDelta(&buf); err != nil {
			b.Fatal(err)
		}
	}
	perTask(b, n)
	b.ReportMetric(float64(buf.Len()), "delta-bytes")
}

// benchRestoreDelta times RestoreDelta over a restored base, with one
// task in every changed.
func benchRestoreDelta(b *testing.B, n, every int) {
	base, delta := preCopyStreams(b, n, every)
	b.SetBytes(int64(len(delta)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s2 := scaleTasks(b, n)
		if err := s2.preCopyRestore(bytes.NewReader(base)); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		b.StartTimer()
		if err := s2.preCopyRestoreDelta(bytes.NewReader(delta)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := s2.Stats().Tasks; got != n {
			b.Fatalf("restored %d tasks, want %d", got, n)
		}
		b.StartTimer()
	}
	perTask(b, n)
}
