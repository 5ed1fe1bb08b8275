package worker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint runs promlint (names, units, help, types) over every
// metric the supervisor registers, after a run so that the histograms have
// samples.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s, err := New(Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 1)
	if err := s.Add(Task{ID: "lint", At: time.Now(), Run: func(context.Context, *Run) error {
		select {
		case ran <- struct{}{}:
		default:
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-ran
	if err := s.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	s.Thaw()
	cancel()
	<-done

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
