package upgrader

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the upgrader's own metrics. Every method is a no-op on a nil
// *metrics, which is what a nil Options.Registerer gives.
type metrics struct {
	upgrades       *prometheus.CounterVec
	duration       prometheus.Histogram
	generation     prometheus.Gauge
	drainDuration  prometheus.Histogram
	drainForced    prometheus.Counter
	listeners      *prometheus.GaugeVec
	stateBytes     prometheus.Gauge
	handoffPause   prometheus.Histogram
	upgradesByStep *prometheus.CounterVec
}

// Upgrade results, the values of the result label.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_upgrades_total",
			Help: "Upgrades triggered in this service, by result.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_upgrade_duration_seconds",
			Help:    "Time from the trigger to the new process being ready.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_generation",
			Help: "Generation of this process: 0 for the first, one more per upgrade.",
		}),
		drainDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_drain_duration_seconds",
			Help:    "Time the process took to drain its connections before exiting.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		drainForced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_drain_forced_connections_total",
			Help: "Connections still open at the drain deadline and closed by force.",
		}),
		listeners: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_listeners",
			Help: "Listening sockets and packet connections handed between generations, by kind.",
		}, []string{"kind"}),
		stateBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_handoff_state_bytes",
			Help: "Size of the last state snapshot handed over or received.",
		}),
		handoffPause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_handoff_pause_seconds",
			Help:    "Time the components were frozen during a handoff: from freeze to the new process being ready, or to the thaw.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		upgradesByStep: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_upgrade_failures_total",
			Help: "Failed upgrades, by the step that failed.",
		}, []string{"step"}),
	}
	for _, c := range []prometheus.Collector{m.upgrades, m.duration, m.generation, m.drainDuration,
		m.drainForced, m.listeners, m.stateBytes, m.handoffPause, m.upgradesByStep} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Both results exist from the start, so rate() sees a zero before the
	// first upgrade rather than a missing series.
	m.upgrades.WithLabelValues(resultSuccess)
	m.upgrades.WithLabelValues(resultFailure)
	return m, nil
}
