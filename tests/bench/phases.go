package main

// The p99 inside upgrade windows, broken down: which part of the window a
// slow request came in, and which process answered it. An upgrade window
// (stats.go) runs from the trigger to the old process's exit plus the
// margin; its parts, by the time a request was sent:
//
//	starting  from the trigger (or earlier, if the request was still in
//	          flight then) to the new process's first reply: the old
//	          process serves everything while the new one starts beside it
//	switch    from the new process's first reply to the old one's exit:
//	          both processes serve, the old one draining
//	after     the margin after the old process's exit: the new process
//	          alone, on code it runs for the first time
//
// A request counts as slow above twice the p99 outside the windows: the
// target's bound.

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// The parts of an upgrade window, in order.
var windowParts = []string{"starting", "switch", "after"}

// phaseStats is the latency of the successful requests of one part of the
// windows, and how many of them were slow.
type phaseStats struct {
	Part string       `json:"part"`
	By   string       `json:"answered_by"` // "old", "new" or "any"
	Lat  latencyStats `json:"latency"`
	Slow int          `json:"slow"`
}

// windowPart returns the upgrade whose window the request sent at from
// (since the load started) and answered after lat overlaps, the part of the
// window and which process answered it; ok is false outside the windows.
func windowPart(s upgradertest.Sample, start time.Time, events []upgradeEvent, margin time.Duration) (e upgradeEvent, i int, part, by string, ok bool) {
	from := s.Start.Sub(start)
	to := from + s.Latency
	for i, e := range events {
		serving, gone := e.At+e.Serving, e.At+max(e.Gone, e.Serving)
		if to < e.At || from > gone+margin {
			continue
		}
		part := "starting"
		switch {
		case from >= gone:
			part = "after"
		case from >= serving:
			part = "switch"
		}
		by := "other"
		switch s.Pid {
		case e.OldPid:
			by = "old"
		case e.NewPid:
			by = "new"
		}
		return e, i, part, by, true
	}
	return upgradeEvent{}, 0, "", "", false
}

// writeWindowSamples writes every successful request inside the windows as
// a CSV row: the upgrade, when it was sent relative to the trigger, its
// latency, the part of the window, the process that answered, and the
// upgrade's serving and gone times (ms).
func writeWindowSamples(w io.Writer, service string, samples []upgradertest.Sample, start time.Time, events []upgradeEvent, margin time.Duration) {
	for _, s := range samples {
		if s.Failed {
			continue
		}
		e, i, part, by, ok := windowPart(s, start, events, margin)
		if !ok {
			continue
		}
		fmt.Fprintf(w, "%s,%d,%.3f,%.3f,%s,%s,%.3f,%.3f\n", service, i+1, ms(s.Start.Sub(start)-e.At), ms(s.Latency),
			part, by, ms(e.Serving), ms(max(e.Gone, e.Serving)))
	}
}

// slowSpread says how the slow requests inside the windows spread over
// the upgrades: how many upgrades had any, and how many the worst one had,
// of all of them. A handful of slow requests in most upgrades is the
// upgrade's cost; most of them in one upgrade is a stall of that moment.
type slowSpread struct {
	Upgrades     int `json:"upgrades"`
	WithSlow     int `json:"upgrades_with_slow"`
	Slow         int `json:"slow"`
	WorstUpgrade int `json:"slow_in_worst_upgrade"`
}

func spreadOfSlow(samples []upgradertest.Sample, start time.Time, events []upgradeEvent, margin time.Duration, outsideP99 float64) slowSpread {
	slow := time.Duration(2 * outsideP99 * float64(time.Millisecond))
	per := make([]int, len(events))
	sp := slowSpread{Upgrades: len(events)}
	for _, s := range samples {
		if s.Failed || s.Latency <= slow {
			continue
		}
		if _, i, _, _, ok := windowPart(s, start, events, margin); ok {
			per[i]++
			sp.Slow++
		}
	}
	for _, n := range per {
		if n > 0 {
			sp.WithSlow++
		}
		sp.WorstUpgrade = max(sp.WorstUpgrade, n)
	}
	return sp
}

// windowPhases breaks the requests inside the windows down by part and by
// the process that answered (the old or the new one of that upgrade).
func windowPhases(samples []upgradertest.Sample, start time.Time, events []upgradeEvent, margin time.Duration, outsideP99 float64) []phaseStats {
	slow := time.Duration(2 * outsideP99 * float64(time.Millisecond))
	type key struct{ part, by string }
	lat := map[key][]time.Duration{}
	for _, s := range samples {
		if s.Failed {
			continue
		}
		if _, _, part, by, ok := windowPart(s, start, events, margin); ok {
			lat[key{part, by}] = append(lat[key{part, by}], s.Latency)
			lat[key{part, "any"}] = append(lat[key{part, "any"}], s.Latency)
		}
	}
	var out []phaseStats
	for _, part := range windowParts {
		for _, by := range []string{"any", "old", "new", "other"} {
			ds := lat[key{part, by}]
			if len(ds) == 0 {
				continue
			}
			n := 0
			for _, d := range ds {
				if d > slow {
					n++
				}
			}
			out = append(out, phaseStats{Part: part, By: by, Lat: latencySummary(ds), Slow: n})
		}
	}
	return out
}

// formatPhases writes each run's breakdown as a table.
func formatPhases(runs []scaleRun) string {
	var b strings.Builder
	fmt.Fprint(&b, "\nInside the windows, by part (starting: trigger -> new pid's first reply; switch: -> old pid gone; after: the margin) and by the process that answered; slow: above 2x the p99 outside\n\n")
	w := tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service\tpart\tanswered by\trequests\tp50\tp99\tmax\tslow\t")
	for _, r := range runs {
		for _, p := range r.Phases {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%d\t\n", r.Service, p.Part, p.By, p.Lat.Count, p.Lat.P50, p.Lat.P99, p.Lat.Max, p.Slow)
		}
	}
	w.Flush()
	for _, r := range runs {
		sp := r.SlowSpread
		fmt.Fprintf(&b, "%s: %d slow requests inside the windows, in %d of %d upgrades; the worst upgrade had %d\n",
			r.Service, sp.Slow, sp.WithSlow, sp.Upgrades, sp.WorstUpgrade)
	}
	return b.String()
}
