//go:build unix

package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// steadyWindow is how long BenchmarkSteadyState measures CPU use;
// BATON_BENCH_WINDOW overrides it (a Go duration).
func steadyWindow(b *testing.B) time.Duration {
	if v := os.Getenv("BATON_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	return 10 * time.Second
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSteadyState measures the process's CPU use (getrusage, user +
// system) while 100k trivial tasks run every second, spread by a second of
// jitter: 100k runs/s. "cores" is CPU time over wall time. The baseline
// is a goroutine and a time.Ticker per task doing the same work. Each
// sub-benchmark runs one measurement window (10 s by default).
func BenchmarkSteadyState(b *testing.B) {
	const n = 100_000
	window := steadyWindow(b)

	b.Run("supervisor", func(b *testing.B) {
		var runs atomic.Int64
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		s, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if err := s.Add(Task{ID: fmt.Sprintf("task-%06d", i), Every: time.Second, Jitter: time.Second, Run: func(context.Context, *Run) error {
				runs.Add(1)
				return nil
			}}); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		errc := make(chan error, 1)
		go func() { errc <- s.Run(context.Background()) }()
		for b.Loop() {
			measure(b, window, 2*time.Second, &runs)
		}
		if err := s.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/n, "heap-bytes/task")
	})

	b.Run("baseline-goroutine-ticker-per-task", func(b *testing.B) {
		var runs atomic.Int64
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				time.Sleep(time.Duration(rand.Int64N(int64(time.Second)))) // the same spread as the jitter
				tk := time.NewTicker(time.Second)
				defer tk.Stop()
				for {
					select {
					case <-tk.C:
						runs.Add(1)
					case <-stop:
						return
					}
				}
			})
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		for b.Loop() {
			measure(b, window, 2*time.Second, &runs)
		}
		close(stop)
		wg.Wait()
		b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/n, "heap-bytes/task")
	})
}

// measure waits warm, then reports cores and runs/s over window.
func measure(b *testing.B, window, warm time.Duration, runs *atomic.Int64) {
	b.Helper()
	time.Sleep(warm) // let the first wave of runs start
	c0, w0, r0 := cpuTime(b), time.Now(), runs.Load()
	time.Sleep(window)
	c1, w1, r1 := cpuTime(b), time.Now(), runs.Load()
	wall := w1.Sub(w0)
	b.ReportMetric(float64(c1-c0)/float64(wall), "cores")
	b.ReportMetric(float64(r1-r0)/wall.Seconds(), "runs/s")
	b.ReportMetric(float64(c1-c0)/float64(r1-r0), "cpu-ns/run")
	b.ReportMetric(0, "ns/op")
}
