package worker

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDispatch measures the supervisor's overhead per run: 1000
// trivial tasks that are always due (CatchUp with a 1 ns interval and no
// catch-up limit: every point since the start is due), so the
// runners go from one run to the next without waiting. ns/op and allocs/op
// are per run. The baseline is a bare channel worker pool of the same size,
// the floor of any bounded-pool design.
func BenchmarkDispatch(b *testing.B) {
	const tasks = 1000
	b.Run("supervisor", func(b *testing.B) {
		s, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		var runs atomic.Int64
		done := make(chan struct{})
		target := int64(b.N)
		for i := range tasks {
			err := s.Add(Task{ID: fmt.Sprint("t", i), Every: time.Nanosecond, Policy: CatchUp, CatchUpLimit: -1, Run: func(context.Context, *Run) error {
				if runs.Add(1) == target {
					close(done)
				}
				return nil
			}})
			if err != nil {
				b.Fatal(err)
			}
		}
		errc := make(chan error, 1)
		b.ReportAllocs()
		b.ResetTimer()
		go func() { errc <- s.Run(context.Background()) }()
		<-done
		b.StopTimer()
		if err := s.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("baseline-channel-pool", func(b *testing.B) {
		// The floor of any bounded pool: hand each run to a worker over a
		// channel, with no schedule, no heap, no bookkeeping.
		var runs atomic.Int64
		work := make(chan func(), runtime.GOMAXPROCS(0)*DefaultWorkersPerCPU)
		var wg sync.WaitGroup
		for range cap(work) {
			wg.Go(func() {
				for f := range work {
					f()
				}
			})
		}
		f := func() { runs.Add(1) }
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			work <- f
		}
		close(work)
		wg.Wait()
	})
}

// BenchmarkHandoff measures an in-process upgrade of n tasks (every second,
// spread by a second of jitter, so that n/s are due): Freeze, Capture,
// Restore into a supervisor whose tasks were registered beforehand, Run,
// until its first run starts. Each iteration hands over to the next
// supervisor, like repeated upgrades. Reported per handoff: each phase in
// ms, handoff-ms from Freeze to the first run, pause-ms as Handoff reports
// it (last run finished in the old supervisor to first run started in the
// new), and the snapshot size.
func BenchmarkHandoff(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) { benchHandoff(b, n) })
	}
}

type generation struct {
	s     *Supervisor
	errc  chan error
	first chan struct{}
}

func newGeneration(b *testing.B, n int) *generation {
	b.Helper()
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	g := &generation{s: s, errc: make(chan error, 1), first: make(chan struct{})}
	var once sync.Once
	run := func(context.Context, *Run) error {
		once.Do(func() { close(g.first) })
		return nil
	}
	for i := range n {
		if err := s.Add(Task{ID: fmt.Sprintf("task-%06d", i), Every: time.Second, Jitter: time.Second, Run: run}); err != nil {
			b.Fatal(err)
		}
	}
	return g
}

func (g *generation) start() { go func() { g.errc <- g.s.Run(context.Background()) }() }

func (g *generation) stop(b *testing.B) {
	b.Helper()
	if err := g.s.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := <-g.errc; err != nil {
		b.Fatal(err)
	}
}

func benchHandoff(b *testing.B, n int) {
	old := newGeneration(b, n)
	old.start()
	<-old.first // first runs come due one to two seconds after Add
	var freeze, capt, restore, first, total, pause time.Duration
	var size int
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		next := newGeneration(b, n) // the new binary registers its tasks
		var buf bytes.Buffer
		buf.Grow(size)
		b.StartTimer()

		t0 := time.Now()
		if err := old.s.Freeze(context.Background()); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := old.s.Capture(&buf); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := next.s.Restore(&buf); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		next.start()
		<-next.first
		t4 := time.Now()

		b.StopTimer()
		freeze += t1.Sub(t0)
		capt += t2.Sub(t1)
		restore += t3.Sub(t2)
		first += t4.Sub(t3)
		total += t4.Sub(t0)
		pause += next.s.Handoff().Pause()
		size = capturedSize(b, next.s)
		old.stop(b)
		old = next
		b.StartTimer()
	}
	b.StopTimer()
	old.stop(b)
	ms := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(ms(freeze), "freeze-ms")
	b.ReportMetric(ms(capt), "capture-ms")
	b.ReportMetric(ms(restore), "restore-ms")
	b.ReportMetric(ms(first), "firstrun-ms")
	b.ReportMetric(ms(total), "handoff-ms")
	b.ReportMetric(ms(pause), "pause-ms")
	b.ReportMetric(float64(size), "snapshot-bytes")
	b.ReportMetric(0, "ns/op") // the phases above say more than the loop time
}

func capturedSize(b *testing.B, s *Supervisor) int {
	b.Helper()
	var cw countWriter
	if err := s.Capture(&cw); err != nil {
		b.Fatal(err)
	}
	return int(cw)
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// BenchmarkCapture measures Capture and Restore alone for 100k tasks with
// a little state each.
func BenchmarkCapture(b *testing.B) {
	const n = 100_000
	clk := newFakeClock()
	s, err := New(Options{now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		tk := Task{ID: fmt.Sprintf("task-%06d", i), Kind: "bench", Every: time.Second, Run: func(_ context.Context, r *Run) error {
			return r.Checkpoint([]byte("cursor:0123456789"))
		}}
		if err := s.Add(tk); err != nil {
			b.Fatal(err)
		}
	}
	clk.Advance(time.Second)
	for step(s) != "" {
	}
	var buf bytes.Buffer
	if err := s.Capture(&buf); err != nil {
		b.Fatal(err)
	}
	snap := bytes.Clone(buf.Bytes())
	b.Run("capture", func(b *testing.B) {
		b.SetBytes(int64(len(snap)))
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			if err := s.Capture(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap))/n, "bytes/task")
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(int64(len(snap)))
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			s2, err := New(Options{now: clk.Now})
			if err != nil {
				b.Fatal(err)
			}
			for _, t := range s.all {
				spec := *t.spec
				spec.ID = t.id
				if err := s2.Add(spec); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			b.StartTimer()
			if err := s2.Restore(bytes.NewReader(snap)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
