package upgrader

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the upgrader's own counters in Counters. They carry over across
// upgrades like any other counter.
const (
	counterUpgradeSuccess = "baton.upgrades.success"
	counterUpgradeFailure = "baton.upgrades.failure"
	// counterUpgradeRolledBack counts upgrades rolled back during their
	// probation (not also counted as failures).
	counterUpgradeRolledBack = "baton.upgrades.rolled_back"
	counterFailureStep       = "baton.upgrades.failure.step."
	counterDrainForced       = "baton.drain.forced_connections"
)

// metrics are the upgrader's Prometheus metrics. The counters are read from
// Counters at scrape time, so they continue across generations; the gauges
// and histograms belong to this process.
type metrics struct {
	counters *Counters

	upgradesDesc    *prometheus.Desc
	failuresDesc    *prometheus.Desc
	drainForcedDesc *prometheus.Desc

	duration      prometheus.Histogram
	generation    prometheus.Gauge
	drainDuration prometheus.Histogram
	listeners     *prometheus.GaugeVec
	stateBytes    prometheus.Gauge
	handoffPause  prometheus.Histogram
	inFlight      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		upgradesDesc: prometheus.NewDesc("baton_upgrades_total",
			"Upgrades of this service, by result; carried over across upgrades.", []string{"result"}, nil),
		failuresDesc: prometheus.NewDesc("baton_upgrade_failures_total",
			"Failed upgrades, by the step that failed; carried over across upgrades.", []string{"step"}, nil),
		drainForcedDesc: prometheus.NewDesc("baton_drain_forced_connections_total",
			"Connections still open at a drain deadline and closed by force; carried over across upgrades.", nil, nil),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_upgrade_duration_seconds",
			Help:    "Time from the trigger to the new process being ready, observed by the new process for the upgrade that started it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_generation",
			Help: "Generation of this process: 0 for the first, one more per upgrade.",
		}),
		drainDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_drain_duration_seconds",
			Help:    "Time the previous generation took to drain its connections after the upgrade that started this process (or this process, stopping without an upgrade).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		listeners: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_listeners",
			Help: "Listening sockets and packet sockets taken through the upgrader, by network.",
		}, []string{"network"}),
		stateBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_handoff_state_bytes",
			Help: "Size of the last state snapshot this process handed over or received.",
		}),
		handoffPause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_handoff_pause_seconds",
			Help:    "Time the participants were frozen in a handoff: from the freeze to the new process being ready, or to the thaw.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_http_requests_in_flight",
			Help: "HTTP requests this process's servers (Serve, ServeTLS) are handling now, draining ones included.",
		}),
	}
	for _, c := range []prometheus.Collector{m, m.duration, m.generation, m.drainDuration,
		m.listeners, m.stateBytes, m.handoffPause, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector for the carried-over counters.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.upgradesDesc
	ch <- m.failuresDesc
	ch <- m.drainForcedDesc
}

// Collect implements prometheus.Collector for the carried-over counters.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	if m.counters == nil {
		return
	}
	vals := m.counters.Values()
	ch <- prometheus.MustNewConstMetric(m.upgradesDesc, prometheus.CounterValue, float64(vals[counterUpgradeSuccess]), "success")
	ch <- prometheus.MustNewConstMetric(m.upgradesDesc, prometheus.CounterValue, float64(vals[counterUpgradeFailure]), "failure")
	ch <- prometheus.MustNewConstMetric(m.upgradesDesc, prometheus.CounterValue, float64(vals[counterUpgradeRolledBack]), "rolled_back")
	ch <- prometheus.MustNewConstMetric(m.drainForcedDesc, prometheus.CounterValue, float64(vals[counterDrainForced]))
	for name, v := range vals {
		if step, ok := strings.CutPrefix(name, counterFailureStep); ok {
			ch <- prometheus.MustNewConstMetric(m.failuresDesc, prometheus.CounterValue, float64(v), step)
		}
	}
}
