package worker

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock without a monotonic reading, like the wall
// clock of another process.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTest returns a supervisor with opts, a log buffer and a cleanup that
// shuts it down.
func newTest(t *testing.T, opts Options) (*Supervisor, *syncBuffer) {
	t.Helper()
	logs := new(syncBuffer)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s, logs
}

// start runs s in the background; the test's cleanup waits for Run.
func start(t *testing.T, s *Supervisor) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		// Registered after newTest's cleanup, so it runs before it:
		// shut down here, then collect Run's result.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// step runs the earliest task, if it is due on the supervisor's clock,
// synchronously as a runner would, and returns its ID ("" if none is due).
// It drives a supervisor whose Run was not called, so tests of schedule
// logic run on a fake clock without goroutines.
func step(s *Supervisor) string {
	s.mu.Lock()
	var tk *task
	for !s.runnableLocked(tk) {
		if s.q.len() == 0 || s.q.peek().due > s.mono(s.opts.now()) || s.frozen {
			s.mu.Unlock()
			return ""
		}
		tk = s.q.pop(s.all)
	}
	j := s.dispatchLocked(tk)
	s.mu.Unlock()
	s.execute(j, &Run{s: s}, false)
	return tk.id
}

// stepAll runs due tasks until none is due, at most limit runs.
func stepAll(t *testing.T, s *Supervisor, limit int) int {
	t.Helper()
	for n := 0; ; n++ {
		if step(s) == "" {
			return n
		}
		if n == limit {
			t.Fatalf("still due after %d runs", limit)
		}
	}
}

func capture(t *testing.T, s *Supervisor) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Capture(&buf); err != nil {
		t.Fatalf("Capture: %v", err)
	}
	return buf.Bytes()
}

func info(t *testing.T, s *Supervisor, id string) TaskInfo {
	t.Helper()
	ti, ok := s.Task(id)
	if !ok {
		t.Fatalf("task %q not registered", id)
	}
	return ti
}

func mustAdd(t *testing.T, s *Supervisor, tasks ...Task) {
	t.Helper()
	for _, tk := range tasks {
		if err := s.Add(tk); err != nil {
			t.Fatalf("Add(%q): %v", tk.ID, err)
		}
	}
}

func nop(context.Context, *Run) error { return nil }

// seqLog records the sequence numbers each task's runs saw.
type seqLog struct {
	mu   sync.Mutex
	seqs map[string][]uint64
}

func newSeqLog() *seqLog { return &seqLog{seqs: make(map[string][]uint64)} }

func (l *seqLog) add(id string, seq uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs[id] = append(l.seqs[id], seq)
	return len(l.seqs[id])
}

func (l *seqLog) get(id string) []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint64(nil), l.seqs[id]...)
}

// checkConsecutive fails unless seqs is exactly 1..len(seqs).
func checkConsecutive(t *testing.T, id string, seqs []uint64) {
	t.Helper()
	for i, q := range seqs {
		if q != uint64(i+1) {
			t.Fatalf("task %q: runs saw sequence numbers %v, want 1..%d in order without gaps or repeats", id, seqs, len(seqs))
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits for ch to close or a value, failing after a generous bound.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
