package worker

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// benchKinds registers the benchmarks' kind on s.
func benchKinds(b *testing.B, s *Supervisor) {
	b.Helper()
	if err := s.RegisterKind(Kind{Name: "bench", Version: 1, Run: nop}); err != nil {
		b.Fatal(err)
	}
}

// dataTask returns the i-th task of a mix like a service's customers':
// intervals, cron expressions in three zones, one-off runs.
func dataTask(i int, now time.Time) Task {
	t := Task{ID: fmt.Sprintf("customer-%07d", i), Kind: "bench", Args: []byte(`{"customer":42}`)}
	switch i % 4 {
	case 0:
		t.Every, t.Jitter = time.Minute, time.Second
	case 1:
		t.Cron, t.TimeZone = "*/15 * * * *", "Europe/Paris"
	case 2:
		t.Cron, t.TimeZone = "0 30 9 * * mon-fri", "America/New_York"
	case 3:
		t.At = now.Add(time.Duration(i) * time.Second)
	}
	return t
}

// withDataTasks returns a supervisor with n data tasks of dataTask's mix.
func withDataTasks(b *testing.B, n int) *Supervisor {
	b.Helper()
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchKinds(b, s)
	now := time.Now()
	for i := range n {
		if err := s.Add(dataTask(i, now)); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// restoreKinds returns a new supervisor with the benchmarks' kind that
// restored snap.
func restoreKinds(b *testing.B, snap []byte) *Supervisor {
	b.Helper()
	r, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchKinds(b, r)
	if err := r.Restore(bytes.NewReader(snap)); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkAddRemove measures Add then Remove of one task while the
// supervisor holds 100k others (data tasks of a registered kind): ns/op
// is the pair.
func BenchmarkAddRemove(b *testing.B) {
	s := withDataTasks(b, 100_000)
	now := time.Now()
	tasks := make([]Task, 1024)
	for i := range tasks {
		tasks[i] = dataTask(200_000+i, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t := tasks[i%len(tasks)]
		if err := s.Add(t); err != nil {
			b.Fatal(err)
		}
		if err := s.Remove(t.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCronNext measures the schedule computation after a run of one
// cron task: the expression's next point, in its zone, on the
// supervisor's clock. "elapsed" fires every 15 minutes, "wall" at 09:30 on
// weekdays (the wall-clock path that keeps DST changes from skipping or
// doubling a run).
func BenchmarkCronNext(b *testing.B) {
	for _, c := range []struct{ name, expr, zone string }{
		{"elapsed", "*/15 * * * *", "Europe/Paris"},
		{"wall", "0 30 9 * * mon-fri", "America/New_York"},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(Options{})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Add(Task{ID: "c", Cron: c.expr, TimeZone: c.zone, Run: nop}); err != nil {
				b.Fatal(err)
			}
			t := s.byID.get(s.all, "c")
			first := t.nominal
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%1000 == 0 {
					t.nominal = first // stay within years of now
				}
				sl := s.nextSlotFor(t, t.nominal, t.nominal)
				t.nominal = sl.next
			}
		})
	}
}

// BenchmarkSnapshotPerTask measures Capture of 100k data tasks (the mix
// of dataTask) and reports the snapshot's bytes per task.
func BenchmarkSnapshotPerTask(b *testing.B) {
	const n = 100_000
	s := withDataTasks(b, n)
	var buf bytes.Buffer
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		buf.Reset()
		if err := s.Capture(&buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(buf.Len())/n, "bytes/task")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/task")
	// And back: a new process restores them from their kind alone.
	if got := restoreKinds(b, buf.Bytes()).Stats().Tasks; got != n {
		b.Fatalf("restored %d tasks, want %d", got, n)
	}
}

// BenchmarkRestoreDataTasks measures Restore of 100k data tasks into a
// process that registers only their kind: each is built from its spec.
func BenchmarkRestoreDataTasks(b *testing.B) {
	const n = 100_000
	s := withDataTasks(b, n)
	var buf bytes.Buffer
	if err := s.Capture(&buf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		restoreKinds(b, buf.Bytes())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/task")
}
