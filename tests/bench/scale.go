package main

// The scale mode: baton-demo with many tasks and a large application map,
// upgraded under the same load as the other runs, next to the tableflip
// recipe and baton-demo without state in the same run, printing the scale
// targets with their ratios and drawing the pause against the task count
// and the memory over the upgrades.
//
//	go run ./tests/bench -mode scale -tasks 10000,100000,1000000 -state-entries 100000 -upgrades 5

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// scaleFlags are the scale mode's own flags.
type scaleFlags struct {
	tasks   string // comma-separated task counts
	entries string // comma-separated map sizes
}

func (s *scaleFlags) register() {
	flag.StringVar(&s.tasks, "tasks", "10000,100000,1000000",
		"-mode scale: comma-separated `counts` of baton-demo tasks (-tasks), one run each; empty for none")
	flag.StringVar(&s.entries, "state-entries", "100000",
		"-mode scale: comma-separated `sizes` of baton-demo's map (-kv-entries), one run each; empty for none")
}

// The scale targets (issue 17).
const (
	targetStateOverTableflip = 40.0 // ms, trigger -> serving, map over tableflip
	targetNoStateRatio       = 1.5  // switch with no state over tableflip
	targetP99Ratio           = 2.0  // p99 inside windows over outside
	targetServing1M          = 1000 // ms, trigger -> serving with 1M tasks
	targetRSSRatio           = 1.15 // new process's peak RSS over the old one's
	targetBytesPerTask       = 200  // bytes of RSS per task
)

// scaleRun is one run of the scale mode: the summary of the ordinary runs
// and what the scale targets need besides.
type scaleRun struct {
	runResult
	Tasks   int `json:"tasks"`
	Entries int `json:"kv_entries"`
	// Pause is the gap in background work as the logs tell it: from the
	// old process's "participants frozen" to the new one's "serving",
	// after which baton-demo starts its tasks.
	Pause timeStats `json:"work_pause"`
	// PeakOverOld is the highest VmHWM of one process over the steady RSS
	// of the first one.
	PeakOverOld float64 `json:"peak_rss_over_old"`
	// BytesPerTask is the steady RSS above baton-nokv's, per task.
	BytesPerTask float64 `json:"bytes_per_task,omitempty"`
	// Phases breaks the latency inside the windows down (phases.go).
	Phases []phaseStats `json:"inside_windows_by_part"`
	// SlowSpread is how the slow requests spread over the upgrades.
	SlowSpread   slowSpread `json:"slow_inside_windows"`
	pauses       []time.Duration
	rss          []rssSample
	firstTrigger time.Duration
}

// scaleSpecs are the services of the scale mode: the baselines, then one
// baton-demo per map size and per task count.
func scaleSpecs(p programs, sf scaleFlags) ([]serviceSpec, map[string][2]int, error) {
	specs := []serviceSpec{
		{Name: "tableflip", Bin: p.base},
		{Name: "baton-nokv", Bin: p.demo, Args: append(slices.Clone(p.demoArgs), "-kv-entries=0")},
	}
	sizes := map[string][2]int{"baton-nokv": {0, 0}}
	entries, err := counts(sf.entries)
	if err != nil {
		return nil, nil, fmt.Errorf("-state-entries: %w", err)
	}
	tasks, err := counts(sf.tasks)
	if err != nil {
		return nil, nil, fmt.Errorf("-tasks: %w", err)
	}
	for _, n := range entries {
		name := "baton-kv" + short(n)
		specs = append(specs, serviceSpec{Name: name, Bin: p.demo, Args: append(slices.Clone(p.demoArgs), "-kv-entries="+strconv.Itoa(n))})
		sizes[name] = [2]int{0, n}
	}
	for _, n := range tasks {
		name := "baton-tasks" + short(n)
		specs = append(specs, serviceSpec{Name: name, Bin: p.demo,
			Args: append(slices.Clone(p.demoArgs), "-kv-entries=0", "-tasks="+strconv.Itoa(n))})
		sizes[name] = [2]int{n, 0}
	}
	return specs, sizes, nil
}

func counts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// short writes 10000 as 10k and 1000000 as 1M.
func short(n int) string {
	switch {
	case n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// runScale runs the scale mode and writes scale.txt, scale.json,
// scale-windows.csv (every request inside the upgrade windows: phases.go),
// scale-pause.png and scale-rss.png to f.out.
func runScale(ctx context.Context, f flags, p programs, root string, m machine) error {
	specs, sizes, err := scaleSpecs(p, f.scale)
	if err != nil {
		return err
	}
	cfg := f.runConfig()
	var runs []scaleRun
	csv, err := os.Create(filepath.Join(f.out, "scale-windows.csv"))
	if err != nil {
		return err
	}
	defer csv.Close()
	fmt.Fprintln(csv, "service,upgrade,sent_ms,latency_ms,part,answered_by,serving_ms,gone_ms")
	for _, spec := range specs {
		fmt.Printf("%s: %d upgrades under load ...\n", spec.Name, f.upgrades)
		d, err := runService(ctx, spec, root, cfg)
		if err != nil {
			return err
		}
		if d.err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, d.err)
		}
		r := scaleRun{runResult: summarize(d, f.margin), Tasks: sizes[spec.Name][0], Entries: sizes[spec.Name][1],
			pauses: d.pauses, rss: d.rss}
		if len(d.events) > 0 {
			r.firstTrigger = d.events[0].At
		}
		r.Pause = timeSummary(r.pauses)
		if d.report != nil {
			r.Phases = windowPhases(d.report.Samples, d.loadStart, d.events, f.margin, r.Outside.P99)
			r.SlowSpread = spreadOfSlow(d.report.Samples, d.loadStart, d.events, f.margin, r.Outside.P99)
			writeWindowSamples(csv, spec.Name, d.report.Samples, d.loadStart, d.events, f.margin)
		}
		if r.RSSSteady > 0 {
			r.PeakOverOld = round3(float64(r.HWMMax) / float64(r.RSSSteady))
		}
		runs = append(runs, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if base := findScale(runs, "baton-nokv"); base != nil {
		for i := range runs {
			if runs[i].Tasks > 0 && runs[i].RSSSteady > 0 {
				runs[i].BytesPerTask = math.Round(float64(runs[i].RSSSteady-base.RSSSteady) * 1024 / float64(runs[i].Tasks))
			}
		}
	}
	checks := scaleChecks(runs)
	err = writeReport(f.out, "scale.txt", m.String()+formatScale(runs, checks), "scale.json", struct {
		Machine machine    `json:"machine"`
		Runs    []scaleRun `json:"runs"`
		Checks  []check    `json:"checks"`
	}{m, runs, checks})
	if err != nil {
		return err
	}
	if err := plotPauses(filepath.Join(f.out, "scale-pause.png"), runs); err != nil {
		return err
	}
	if err := plotRSS(filepath.Join(f.out, "scale-rss.png"), runs); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s\n", f.out)
	for _, r := range runs {
		if r.Error != "" {
			return fmt.Errorf("%s stopped early", r.Service)
		}
	}
	return nil
}

func findScale(runs []scaleRun, name string) *scaleRun {
	for i := range runs {
		if runs[i].Service == name && runs[i].Upgrades > 0 {
			return &runs[i]
		}
	}
	return nil
}

// workPauses returns, per upgrade, the time from the old process's
// "participants frozen" to the new one's "serving", from the times slog
// wrote on the lines (milliseconds); an upgrade missing either line is
// left out.
func workPauses(l *upgradertest.Logs, events []upgradeEvent) []time.Duration {
	var out []time.Duration
	lines := l.Lines(0)
	at := func(pid int, msg string) (time.Time, bool) {
		for _, x := range lines {
			if x.Pid == pid && x.Msg == msg {
				t, err := time.Parse(time.RFC3339Nano, x.Fields["time"])
				return t, err == nil
			}
		}
		return time.Time{}, false
	}
	for _, e := range events {
		frozen, ok1 := at(e.OldPid, "participants frozen")
		serving, ok2 := at(e.NewPid, msgServing)
		if ok1 && ok2 {
			out = append(out, serving.Sub(frozen))
		}
	}
	return out
}

// scaleChecks holds each run to the scale targets that apply to it.
func scaleChecks(runs []scaleRun) []check {
	var cs []check
	t := findScale(runs, "tableflip")
	for _, r := range runs {
		if r.Service == "tableflip" {
			continue
		}
		cs = append(cs, check{Target: r.Service + ": no failed and no silently re-sent request",
			Value: fmt.Sprintf("%d failed, %d re-sent of %d", r.Failed, r.Retried, r.Requests),
			Pass:  r.Failed == 0 && r.Retried == 0 && r.Error == ""})
		if t != nil && r.Service == "baton-nokv" {
			ratio := r.Serving.Median / t.Serving.Median
			cs = append(cs, check{Target: fmt.Sprintf("switch with no state, trigger->serving median, within %.1fx tableflip", targetNoStateRatio),
				Value: fmt.Sprintf("%.1f ms vs %.1f ms: %.2fx", r.Serving.Median, t.Serving.Median, ratio), Pass: ratio <= targetNoStateRatio})
		}
		if t != nil && r.Entries > 0 {
			diff := r.Serving.Median - t.Serving.Median
			cs = append(cs, check{Target: fmt.Sprintf("%s: %d-entry map, trigger->serving median, within tableflip +%.0f ms", r.Service, r.Entries, targetStateOverTableflip),
				Value: fmt.Sprintf("%.1f ms vs %.1f ms: %+.1f ms", r.Serving.Median, t.Serving.Median, diff), Pass: diff <= targetStateOverTableflip})
		}
		cs = append(cs, check{Target: fmt.Sprintf("%s: p99 inside upgrade windows within %.0fx p99 outside", r.Service, targetP99Ratio),
			Value: fmt.Sprintf("%.2f ms vs %.2f ms: %.2fx", r.Inside.P99, r.Outside.P99, r.Inside.P99/r.Outside.P99),
			Pass:  r.Inside.P99 <= targetP99Ratio*r.Outside.P99})
		if r.Tasks >= 1_000_000 {
			cs = append(cs, check{Target: fmt.Sprintf("%s: trigger->serving median under %d ms", r.Service, targetServing1M),
				Value: fmt.Sprintf("%.1f ms", r.Serving.Median), Pass: r.Serving.Median < targetServing1M})
		}
		if r.Tasks > 0 {
			cs = append(cs, check{Target: fmt.Sprintf("%s: peak RSS of one process within %.2fx the old one's steady RSS", r.Service, targetRSSRatio),
				Value: fmt.Sprintf("%s vs %s: %.2fx", mib(r.HWMMax), mib(r.RSSSteady), r.PeakOverOld), Pass: r.PeakOverOld <= targetRSSRatio})
			cs = append(cs, check{Target: fmt.Sprintf("%s: at most %d B of RSS per task", r.Service, targetBytesPerTask),
				Value: fmt.Sprintf("%.0f B", r.BytesPerTask), Pass: r.BytesPerTask <= targetBytesPerTask})
		}
	}
	return cs
}

func formatScale(runs []scaleRun, checks []check) string {
	var b strings.Builder
	fmt.Fprint(&b, "\nScale: per upgrade, ms (median / p90 / max); p99 in ms; memory in MiB\n\n")
	w := tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service\ttasks\tentries\tupgrades\tfailed\ttrigger->serving\tvs tableflip\twork pause\tp99 in / out\tRSS steady\tpeak one proc\tpeak/old\tB/task\t")
	t := findScale(runs, "tableflip")
	for _, r := range runs {
		vs := ""
		if t != nil && t.Serving.Median > 0 {
			vs = fmt.Sprintf("%.2fx, %+.1f", r.Serving.Median/t.Serving.Median, r.Serving.Median-t.Serving.Median)
		}
		pause := ""
		if len(r.pauses) > 0 {
			pause = timeCells(r.Pause)
		}
		bpt := ""
		if r.Tasks > 0 {
			bpt = fmt.Sprintf("%.0f", r.BytesPerTask)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%.2f / %.2f = %.2fx\t%.1f\t%.1f\t%.2fx\t%s\t\n",
			r.Service, r.Tasks, r.Entries, r.Upgrades, r.Failed, timeCells(r.Serving), vs, pause,
			r.Inside.P99, r.Outside.P99, r.Inside.P99/r.Outside.P99,
			float64(r.RSSSteady)/1024, float64(r.HWMMax)/1024, r.PeakOverOld, bpt)
	}
	w.Flush()
	b.WriteString(formatPhases(runs))
	writeChecks(&b, checks)
	return b.String()
}

// plotPauses draws the work pause against the task count (log scale):
// the fastest, the median and the slowest upgrade of each count.
func plotPauses(path string, runs []scaleRun) error {
	var lo, med, hi plotter.XYs
	for _, r := range runs {
		if r.Tasks == 0 || len(r.pauses) == 0 {
			continue
		}
		x := float64(r.Tasks)
		lo = append(lo, plotter.XY{X: x, Y: ms(slices.Min(r.pauses))})
		med = append(med, plotter.XY{X: x, Y: r.Pause.Median})
		hi = append(hi, plotter.XY{X: x, Y: ms(slices.Max(r.pauses))})
	}
	if len(med) == 0 {
		return nil
	}
	return lineChart(path, chart{Title: "work pause per upgrade (old: participants frozen -> new: serving)",
		X: "tasks", Y: "pause (ms)", LogX: true},
		[]series{{"slowest upgrade", hi}, {"median", med}, {"fastest upgrade", lo}})
}

// plotRSS draws the summed RSS of each run's processes over time, from
// half a second before its first trigger to two seconds after.
func plotRSS(path string, runs []scaleRun) error {
	var lines []series
	for _, r := range runs {
		var xy plotter.XYs
		for _, s := range r.rss {
			at := (s.At - r.firstTrigger).Seconds()
			if at >= -0.5 && at <= 2 {
				xy = append(xy, plotter.XY{X: at, Y: float64(s.RSS) / 1024})
			}
		}
		if len(xy) >= 2 {
			lines = append(lines, series{r.Service, xy})
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return lineChart(path, chart{Title: "RSS of the service's processes around the first upgrade",
		X: "seconds since the first trigger", Y: "RSS, sum of the processes (MiB)"}, lines)
}
