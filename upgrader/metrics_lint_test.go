package upgrader

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint runs promlint (names, units, help, types) over every
// metric the upgrader registers, each with a sample so that none is left
// out of the scrape.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.counters = newCounters()
	m.counters.Counter(counterUpgradeSuccess).Inc()
	m.counters.Counter(counterFailureStep + "hello").Inc()
	m.duration.Observe(0.1)
	m.drainDuration.Observe(0.1)
	m.handoffPause.Observe(0.01)
	m.listeners.WithLabelValues("tcp").Inc()
	m.generation.Set(1)
	m.stateBytes.Set(100)
	m.inFlight.Inc()

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 10 {
		t.Errorf("linted %d metric families, want the 10 of README's table", len(mfs))
	}
}
