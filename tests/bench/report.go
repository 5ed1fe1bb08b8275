package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// failureKinds are the columns of the failure table, in load's terms.
var failureKinds = []struct{ key, title string }{
	{upgradertest.Refused, "refused"},
	{upgradertest.Reset, "reset"},
	{upgradertest.EOF, "EOF"},
	{upgradertest.Timeout, "timeout"},
	{upgradertest.Status, "non-200"},
	{upgradertest.Body, "bad body"},
	{upgradertest.Other, "other"},
}

// runResult is one service's run in results.json.
type runResult struct {
	Service  string           `json:"service"`
	Args     []string         `json:"args,omitempty"`
	Restart  bool             `json:"plain_restart"`
	Error    string           `json:"error,omitempty"`
	Seconds  float64          `json:"load_seconds"`
	Requests int64            `json:"requests"`
	OK       int64            `json:"ok"`
	Failed   int64            `json:"failed"`
	Failures map[string]int64 `json:"failures"`
	// Retried counts requests Go's client silently sent twice.
	Retried  int64    `json:"retried"`
	Errors   []string `json:"first_errors,omitempty"`
	Upgrades int      `json:"upgrades"`
	// Latency of successful requests inside and outside the upgrade
	// windows (trigger to old pid gone, or to the new pid serving if later,
	// plus the margin).
	Inside  latencyStats `json:"latency_inside_windows"`
	Outside latencyStats `json:"latency_outside_windows"`
	// WindowSeconds is the total length of the windows.
	WindowSeconds float64   `json:"window_seconds"`
	Serving       timeStats `json:"trigger_to_new_pid_serving"`
	Gone          timeStats `json:"trigger_to_old_pid_gone"`
	Overlap       timeStats `json:"overlap"`
	// Memory, KiB: the median sum over the live processes before the first
	// upgrade, the highest sampled sum, and the highest VmHWM of one
	// process.
	// State is what baton's new processes logged: the snapshot's size and
	// the state phase (asking for the state to having restored it).
	StateBytes int64       `json:"state_bytes_median,omitempty"`
	StatePhase timeStats   `json:"state_phase"`
	RSSSteady  int64       `json:"rss_steady_kib"`
	RSSPeak    int64       `json:"rss_peak_sum_kib"`
	HWMMax     int64       `json:"vmhwm_max_one_process_kib"`
	Events     []eventJSON `json:"upgrades_detail"`
}

type eventJSON struct {
	At      float64 `json:"at_s"`
	OldPid  int     `json:"old_pid"`
	NewPid  int     `json:"new_pid"`
	Serving float64 `json:"serving_ms"`
	Gone    float64 `json:"gone_ms"`
	Overlap float64 `json:"overlap_ms"`
	// Baton only: the snapshot and the state phase.
	StateBytes int64   `json:"state_bytes,omitempty"`
	StatePhase float64 `json:"state_phase_ms,omitempty"`
}

func summarize(d *runData, margin time.Duration) runResult {
	r := runResult{Service: d.spec.Name, Args: d.spec.Args, Restart: d.spec.Restart,
		Requests: d.report.Requests, OK: d.report.OK, Failed: d.report.Failed(),
		Failures: d.report.Failures, Retried: d.report.Retried, Errors: d.report.Errors,
		Upgrades: len(d.events), RSSPeak: 0, HWMMax: d.hwm}
	if d.err != nil {
		r.Error = d.err.Error()
	}
	if n := len(d.report.Samples); n > 0 {
		last := d.report.Samples[n-1]
		r.Seconds = math.Round(last.Start.Add(last.Latency).Sub(d.loadStart).Seconds()*100) / 100
	}
	ws := upgradeWindows(d.events, margin)
	for _, w := range ws {
		r.WindowSeconds += (w.to - w.from).Seconds()
	}
	r.WindowSeconds = math.Round(r.WindowSeconds*1000) / 1000
	// The warm-up only brings the load to a steady state: the statistics
	// start at the first trigger, so that "outside" is the time between
	// and after the upgrades, not a cold start.
	samples := d.report.Samples
	if len(d.events) > 0 {
		first := d.loadStart.Add(d.events[0].At)
		i, _ := slices.BinarySearchFunc(samples, first, func(s upgradertest.Sample, t time.Time) int { return s.Start.Compare(t) })
		samples = samples[i:]
	}
	in, out := splitLatencies(samples, d.loadStart, ws)
	r.Inside, r.Outside = latencySummary(in), latencySummary(out)
	var (
		serving, gone, overlap, phase []time.Duration
		sizes                         []int64
	)
	for _, e := range d.events {
		serving = append(serving, e.Serving)
		gone = append(gone, e.Gone)
		overlap = append(overlap, e.Overlap)
		if e.StateBytes > 0 {
			sizes = append(sizes, e.StateBytes)
			phase = append(phase, e.StatePhase)
		}
		r.Events = append(r.Events, eventJSON{At: math.Round(e.At.Seconds()*1000) / 1000, OldPid: e.OldPid,
			NewPid: e.NewPid, Serving: ms(e.Serving), Gone: ms(e.Gone), Overlap: ms(e.Overlap),
			StateBytes: e.StateBytes, StatePhase: ms(e.StatePhase)})
	}
	r.Serving, r.Gone, r.Overlap = timeSummary(serving), timeSummary(gone), timeSummary(overlap)
	if len(sizes) > 0 {
		slices.Sort(sizes)
		r.StateBytes = sizes[len(sizes)/2]
		r.StatePhase = timeSummary(phase)
	}
	var steady []int64
	for _, s := range d.rss {
		r.RSSPeak = max(r.RSSPeak, s.RSS)
		if (len(d.events) == 0 || s.At < d.events[0].At) && s.Procs == 1 {
			steady = append(steady, s.RSS)
		}
	}
	if len(steady) > 0 {
		slices.Sort(steady)
		r.RSSSteady = steady[len(steady)/2]
	}
	return r
}

// ratios compares each baton run with tableflip, and the large state with
// baton without it.
type ratios struct {
	Baton            []ratio `json:"baton_over_tableflip"`
	StateServingDiff float64 `json:"serving_median_state_minus_tableflip_ms"`
	StateVsBatonDiff float64 `json:"serving_median_state_minus_baton_nokv_ms"`
}

// ratio is one baton run's upgrade times over tableflip's.
type ratio struct {
	Service       string  `json:"service"`
	ServingMedian float64 `json:"serving_median"`
	ServingP90    float64 `json:"serving_p90"`
	GoneMedian    float64 `json:"gone_median"`
	GoneP90       float64 `json:"gone_p90"`
}

func find(runs []runResult, name string) *runResult {
	for i := range runs {
		if runs[i].Service == name && runs[i].Upgrades > 0 {
			return &runs[i]
		}
	}
	return nil
}

func computeRatios(runs []runResult) *ratios {
	t := find(runs, "tableflip")
	if t == nil {
		return nil
	}
	var r ratios
	for _, name := range []string{"baton", "baton-nokv", "baton-min", "baton-state"} {
		if b := find(runs, name); b != nil {
			r.Baton = append(r.Baton, ratio{Service: name,
				ServingMedian: round3(b.Serving.Median / t.Serving.Median), ServingP90: round3(b.Serving.P90 / t.Serving.P90),
				GoneMedian: round3(b.Gone.Median / t.Gone.Median), GoneP90: round3(b.Gone.P90 / t.Gone.P90)})
		}
	}
	if s := find(runs, "baton-state"); s != nil {
		r.StateServingDiff = round3(s.Serving.Median - t.Serving.Median)
		base := find(runs, "baton-nokv")
		if base == nil {
			base = find(runs, "baton")
		}
		if base != nil {
			r.StateVsBatonDiff = round3(s.Serving.Median - base.Serving.Median)
		}
	}
	return &r
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// check is one of the targets and whether this run met it.
type check struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Pass   bool   `json:"pass"`
}

func checkTargets(runs []runResult) []check {
	var cs []check
	t, p := find(runs, "tableflip"), find(runs, "restart")
	batons := []*runResult{find(runs, "baton"), find(runs, "baton-nokv"), find(runs, "baton-min"), find(runs, "baton-state")}
	for _, r := range batons {
		if r == nil {
			continue
		}
		cs = append(cs, check{
			Target: r.Service + ": no failed and no silently re-sent request",
			Value:  fmt.Sprintf("%d failed, %d re-sent of %d", r.Failed, r.Retried, r.Requests),
			Pass:   r.Failed == 0 && r.Retried == 0 && r.Error == "",
		})
	}
	if t != nil {
		cs = append(cs, check{Target: "tableflip: some failures or re-sends (the baseline loses requests)",
			Value: fmt.Sprintf("%d failed, %d re-sent", t.Failed, t.Retried), Pass: t.Failed+t.Retried > 0})
	}
	if p != nil && t != nil {
		cs = append(cs, check{Target: "restart: many more failures than tableflip",
			Value: fmt.Sprintf("%d vs %d", p.Failed+p.Retried, t.Failed+t.Retried),
			Pass:  p.Failed+p.Retried > 2*(t.Failed+t.Retried)})
	}
	for _, b := range batons[:3] {
		if b == nil || t == nil {
			continue
		}
		cs = append(cs, check{Target: b.Service + ": trigger->new pid serving, median, within 1.1x tableflip",
			Value: fmt.Sprintf("%.1f ms vs %.1f ms: %.2fx", b.Serving.Median, t.Serving.Median, b.Serving.Median/t.Serving.Median),
			Pass:  b.Serving.Median <= 1.1*t.Serving.Median})
	}
	if s := batons[3]; s != nil && t != nil {
		cs = append(cs, check{Target: "baton-state: trigger->new pid serving, median, within tableflip +20 ms",
			Value: fmt.Sprintf("%.1f ms vs %.1f ms: %+.1f ms", s.Serving.Median, t.Serving.Median, s.Serving.Median-t.Serving.Median),
			Pass:  s.Serving.Median <= t.Serving.Median+20})
	}
	for _, r := range batons {
		if r == nil {
			continue
		}
		cs = append(cs, check{Target: r.Service + ": p99 inside upgrade windows within 2x p99 outside",
			Value: fmt.Sprintf("%.2f ms vs %.2f ms: %.2fx", r.Inside.P99, r.Outside.P99, r.Inside.P99/r.Outside.P99),
			Pass:  r.Inside.P99 <= 2*r.Outside.P99})
	}
	return cs
}

// overheadChecks holds the upgrader's steady-state cost to the 2% target,
// by the mean of the rounds and by the median round.
func overheadChecks(o *overheadResult) []check {
	var cs []check
	for _, v := range o.Variants[:len(o.Variants)-1] {
		cs = append(cs, check{Target: v.Variant + ": req/s at saturation within 2% of plain",
			Value: fmt.Sprintf("mean %+.2f%%, median round %+.2f%% (CPU per request %+.2f%%, median round %+.2f%%)",
				v.RPSOverhead, v.MedianOverhead, v.CPUOverhead, v.MedianCPU),
			Pass: v.RPSOverhead < 2 && v.MedianOverhead < 2})
	}
	return cs
}

// formatTables is the report: the upgrade runs, the ratios over
// tableflip, the cold starts, the steady-state overhead and the targets,
// each where there is something to show.
func formatTables(res results) string {
	var b strings.Builder
	fmt.Fprint(&b, res.Machine.String())
	if len(res.Runs) > 0 {
		writeUpgradeTables(&b, res.Load, res.Runs)
	}
	if r := res.Ratios; r != nil && len(r.Baton) > 0 {
		writeRatios(&b, r, find(res.Runs, "baton-state") != nil)
	}
	if len(res.Cold) > 0 {
		writeColdStarts(&b, res.Cold)
	}
	if o := res.Overhead; o != nil {
		writeOverhead(&b, o)
	}
	if len(res.Checks) > 0 {
		writeChecks(&b, res.Checks)
	}
	return b.String()
}

// newTable aligns the cells of one table, right-aligned, into b; the prose
// between the tables goes to b directly once the table is flushed.
func newTable(b *strings.Builder) *tabwriter.Writer {
	return tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
}

// writeUpgradeTables writes the tables of the upgrade runs: failures,
// latencies, per-upgrade times and memory, baton's state phase, and the
// runs that stopped early.
func writeUpgradeTables(b *strings.Builder, l loadJSON, runs []runResult) {
	fmt.Fprintf(b, "\nUpgrades under load: %d clients on 127.0.0.1, %.0f%% on fresh connections, %.0f%% POST, %d req/s; %d upgrades, triggers at least %s apart\n\n",
		l.Clients, 100*l.Fresh, 100*l.Post, l.Rate, l.Upgrades, l.Interval)
	writeFailures(b, runs)
	fmt.Fprintf(b, "\nLatency of successful requests from the first trigger on, ms: inside upgrade windows (trigger to old pid gone, or new pid serving if later, + %s) | outside\n\n", l.Margin)
	writeLatencies(b, runs)
	fmt.Fprint(b, "\nPer upgrade, ms: median / p90 / max\n\n")
	writePerUpgrade(b, runs)
	if slices.ContainsFunc(runs, func(r runResult) bool { return r.StateBytes > 0 }) {
		fmt.Fprint(b, "\nBaton's state phase, as its new process logged it (asking for the state to having restored it), ms\n\n")
		writeStatePhase(b, runs)
	}
	for _, r := range runs {
		if r.Error != "" {
			fmt.Fprintf(b, "\n%s stopped early: %s\n", r.Service, firstLine(r.Error))
		}
	}
}

func writeFailures(b *strings.Builder, runs []runResult) {
	w := newTable(b)
	fmt.Fprint(w, "service\tupgrades\trequests")
	for _, k := range failureKinds {
		fmt.Fprintf(w, "\t%s", k.title)
	}
	fmt.Fprint(w, "\tre-sent\t\n")
	for _, r := range runs {
		fmt.Fprintf(w, "%s\t%d\t%d", r.Service, r.Upgrades, r.Requests)
		for _, k := range failureKinds {
			fmt.Fprintf(w, "\t%d", r.Failures[k.key])
		}
		fmt.Fprintf(w, "\t%d\t\n", r.Retried)
	}
	w.Flush()
}

func writeLatencies(b *strings.Builder, runs []runResult) {
	w := newTable(b)
	fmt.Fprint(w, "service\tn\tp50\tp99\tp99.9\tmax\t|\tn\tp50\tp99\tp99.9\tmax\tp99 in/out\t\n")
	for _, r := range runs {
		fmt.Fprintf(w, "%s\t%s\t|\t%s\t%.2fx\t\n", r.Service, latCells(r.Inside), latCells(r.Outside), r.Inside.P99/r.Outside.P99)
	}
	w.Flush()
}

func writePerUpgrade(b *strings.Builder, runs []runResult) {
	w := newTable(b)
	fmt.Fprint(w, "service\ttrigger->new pid serving\ttrigger->old pid gone\toverlap (both alive)\tRSS steady\tRSS peak (sum)\tVmHWM max\t\n")
	for _, r := range runs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Service, timeCells(r.Serving), timeCells(r.Gone),
			timeCells(r.Overlap), mib(r.RSSSteady), mib(r.RSSPeak), mib(r.HWMMax))
	}
	w.Flush()
}

func writeStatePhase(b *strings.Builder, runs []runResult) {
	w := newTable(b)
	fmt.Fprint(w, "service\tsnapshot (median)\tmedian / p90 / max\t\n")
	for _, r := range runs {
		if r.StateBytes > 0 {
			fmt.Fprintf(w, "%s\t%.1f KiB\t%s\t\n", r.Service, float64(r.StateBytes)/1024, timeCells(r.StatePhase))
		}
	}
	w.Flush()
}

// writeRatios writes each baton run's upgrade times over tableflip's and,
// with a baton-state run, what the large state adds.
func writeRatios(b *strings.Builder, r *ratios, withState bool) {
	fmt.Fprint(b, "\nOver tableflip\n\n")
	w := newTable(b)
	fmt.Fprint(w, "service\tserving median\tserving p90\tgone median\tgone p90\t\n")
	for _, x := range r.Baton {
		fmt.Fprintf(w, "%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\n", x.Service, x.ServingMedian, x.ServingP90, x.GoneMedian, x.GoneP90)
	}
	w.Flush()
	if withState {
		fmt.Fprintf(b, "\nbaton-state: trigger->new pid serving median %+.1f ms vs tableflip, %+.1f ms vs baton without the large state\n",
			r.StateServingDiff, r.StateVsBatonDiff)
	}
}

func writeColdStarts(b *strings.Builder, cold []coldStart) {
	fmt.Fprint(b, "\nCold start, no upgrade: exec to the first reply, ms: median / p90 / max\n\n")
	w := newTable(b)
	fmt.Fprint(w, "service\targs\tstarts\texec->first reply\t\n")
	for _, c := range cold {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t\n", c.Service, strings.Join(c.Args, " "), c.Starts, timeCells(c.FirstReply))
	}
	w.Flush()
}

// writeOverhead writes every saturation measurement, then each variant
// against plain, over the rounds and per round.
func writeOverhead(b *strings.Builder, o *overheadResult) {
	fmt.Fprintf(b, "\nSteady-state overhead: GET / closed loop, %d keep-alive clients, %s per measurement, variants alternated\n\n", o.Clients, o.Duration)
	w := newTable(b)
	fmt.Fprint(w, "round\tvariant\treq/s\tp50 ms\tp99 ms\tserver CPU us/req\terrors\t\n")
	for _, r := range o.Runs {
		fmt.Fprintf(w, "%d\t%s\t%.0f\t%.3f\t%.3f\t%.1f\t%d\t\n", r.Round, r.Variant, r.RPS, r.P50, r.P99, r.CPUPerReq, r.Errors)
	}
	w.Flush()
	fmt.Fprint(b, "\nAgainst plain: means over the rounds (req/s overhead: positive is slower), and the median of the rounds, each against the plain run of the same round\n\n")
	fmt.Fprint(w, "variant\treq/s\tp99 ms\tCPU us/req\treq/s overhead\tp99 change\tCPU/req change\tmedian round: req/s overhead\tCPU/req change\t\n")
	for _, v := range o.Variants {
		fmt.Fprintf(w, "%s\t%.0f\t%.3f\t%.1f\t%+.2f%%\t%+.1f%%\t%+.2f%%\t%+.2f%%\t%+.2f%%\t\n", v.Variant, v.RPS, v.P99, v.CPU,
			v.RPSOverhead, v.P99Change, v.CPUOverhead, v.MedianOverhead, v.MedianCPU)
	}
	w.Flush()
	for _, v := range o.Variants[:len(o.Variants)-1] {
		fmt.Fprintf(b, "%s per round: req/s overhead %v %%, CPU/req change %v %%\n", v.Variant, v.RoundOverheads, v.RoundCPU)
	}
}

func writeChecks(b *strings.Builder, checks []check) {
	fmt.Fprint(b, "\nTargets\n\n")
	for _, c := range checks {
		verdict := "PASS"
		if !c.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(b, "  %s  %s: %s\n", verdict, c.Target, c.Value)
	}
}

func latCells(l latencyStats) string {
	return fmt.Sprintf("%d\t%.2f\t%.2f\t%.2f\t%.2f", l.Count, l.P50, l.P99, l.P999, l.Max)
}

func timeCells(t timeStats) string {
	return fmt.Sprintf("%.1f / %.1f / %.1f", t.Median, t.P90, t.Max)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
