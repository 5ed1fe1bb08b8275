package main

import (
	"math"
	"slices"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// latencyStats summarises request latencies, in milliseconds.
type latencyStats struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func latencySummary(ds []time.Duration) latencyStats {
	s := sortedCopy(ds)
	return latencyStats{Count: len(s), P50: ms(quantile(s, 0.5)), P99: ms(quantile(s, 0.99)),
		P999: ms(quantile(s, 0.999)), Max: ms(quantile(s, 1))}
}

// timeStats summarises per-upgrade times, in milliseconds.
type timeStats struct {
	Median float64 `json:"median_ms"`
	P90    float64 `json:"p90_ms"`
	Max    float64 `json:"max_ms"`
}

func timeSummary(ds []time.Duration) timeStats {
	s := sortedCopy(ds)
	return timeStats{Median: ms(quantile(s, 0.5)), P90: ms(quantile(s, 0.9)), Max: ms(quantile(s, 1))}
}

func sortedCopy(ds []time.Duration) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s
}

// quantile is the nearest-rank quantile of sorted: the smallest value with
// at least q of the values at or below it. Zero for no values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// window is a span of the run, as offsets from the load's start.
type window struct{ from, to time.Duration }

// upgradeWindows spans each upgrade from its trigger to the old process's
// exit, plus margin. A plain restart's window lasts until the new process
// answers, which is after the old one exited: the gap is part of it.
func upgradeWindows(events []upgradeEvent, margin time.Duration) []window {
	var ws []window
	for _, e := range events {
		ws = append(ws, window{e.At, e.At + max(e.Gone, e.Serving) + margin})
	}
	return ws
}

// splitLatencies returns the latencies of the successful requests that
// overlapped a window and of the others.
func splitLatencies(samples []upgradertest.Sample, start time.Time, ws []window) (inside, outside []time.Duration) {
	for _, s := range samples {
		if s.Failed {
			continue
		}
		from := s.Start.Sub(start)
		to := from + s.Latency
		in := false
		for _, w := range ws {
			if from <= w.to && to >= w.from {
				in = true
				break
			}
		}
		if in {
			inside = append(inside, s.Latency)
		} else {
			outside = append(outside, s.Latency)
		}
	}
	return inside, outside
}
