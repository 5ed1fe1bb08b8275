package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exports the supervisor's counters and histograms. Counts and
// totals live on the Supervisor (Stats needs them without a registry, and
// Restore seeds the totals from the snapshot), so they are read at scrape
// time as const metrics; the histograms are observed on the run path.
type metrics struct {
	s *Supervisor

	tasks, orphans, maybeDups                           *prometheus.Desc
	runs, failures, panics, skipped, cutOffs, abandoned *prometheus.Desc

	duration, lag, freeze prometheus.Histogram
}

func newMetrics(s *Supervisor, reg prometheus.Registerer) (*metrics, error) {
	const ns = "baton_worker_"
	m := &metrics{
		s:        s,
		tasks:    prometheus.NewDesc(ns+"tasks", "Registered tasks by status.", []string{"status"}, nil),
		orphans:  prometheus.NewDesc(ns+"orphaned_tasks", "Tasks in the snapshot that this binary does not run: of a kind it does not register (kept until a binary with the kind adopts them), or registered by ID elsewhere only (kept for one generation).", nil, nil),
		runs:     prometheus.NewDesc(ns+"runs_total", "Finished runs, across upgrades.", nil, nil),
		failures: prometheus.NewDesc(ns+"run_failures_total", "Runs that returned an error or panicked, across upgrades.", nil, nil),
		panics:   prometheus.NewDesc(ns+"run_panics_total", "Runs that panicked, across upgrades.", nil, nil),
		skipped:  prometheus.NewDesc(ns+"skipped_runs_total", "Schedule points dropped by the skip-late policy, across upgrades.", nil, nil),
		cutOffs:  prometheus.NewDesc(ns+"cut_off_runs_total", "Runs abandoned at the freeze bound or a hard stop, to run again.", nil, nil),
		abandoned: prometheus.NewDesc(ns+"abandoned_runs_total",
			"Runs that ignored their cancellation past the stop timeout and that the stopping supervisor stopped waiting for, in this process.", nil, nil),
		maybeDups: prometheus.NewDesc(ns+"maybe_duplicated_tasks",
			"Tasks whose next or current run repeats one that was cut off after it started.", nil, nil),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    ns + "run_duration_seconds",
			Help:    "Duration of runs.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 12),
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    ns + "schedule_lag_seconds",
			Help:    "Delay from a run's due time to its start.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 12),
		}),
		freeze: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    ns + "freeze_duration_seconds",
			Help:    "Time Freeze took to stop dispatching and drain the runs in flight.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10),
		}),
	}
	cs := []prometheus.Collector{m, m.duration, m.lag, m.freeze}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done) // leave the registry as it was
			}
			return nil, fmt.Errorf("worker: register metrics: %w", err)
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.tasks, m.orphans, m.maybeDups, m.runs, m.failures, m.panics, m.skipped, m.cutOffs, m.abandoned} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	s.mu.Lock()
	counts := s.viewCountsLocked()
	tot := s.totals
	orphans := len(s.orphans)
	abandoned, dups := s.abandonedTotal, s.dupCount
	s.mu.Unlock()
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.tasks, prometheus.GaugeValue, float64(n), Status(st).String())
	}
	ch <- prometheus.MustNewConstMetric(m.orphans, prometheus.GaugeValue, float64(orphans))
	ch <- prometheus.MustNewConstMetric(m.runs, prometheus.CounterValue, float64(tot.runs))
	ch <- prometheus.MustNewConstMetric(m.failures, prometheus.CounterValue, float64(tot.failures))
	ch <- prometheus.MustNewConstMetric(m.panics, prometheus.CounterValue, float64(tot.panics))
	ch <- prometheus.MustNewConstMetric(m.skipped, prometheus.CounterValue, float64(tot.skipped))
	ch <- prometheus.MustNewConstMetric(m.cutOffs, prometheus.CounterValue, float64(tot.cutOff))
	ch <- prometheus.MustNewConstMetric(m.abandoned, prometheus.CounterValue, float64(abandoned))
	ch <- prometheus.MustNewConstMetric(m.maybeDups, prometheus.GaugeValue, float64(dups))
}
