package main

import (
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
	"gonum.org/v1/plot/plotter"
)

func TestQuantile(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{name: "empty", sorted: nil, q: 0.5, want: 0},
		{name: "one", sorted: []time.Duration{ms}, q: 0.99, want: ms},
		{name: "median of four is the second", sorted: []time.Duration{1 * ms, 2 * ms, 3 * ms, 4 * ms}, q: 0.5, want: 2 * ms},
		{name: "p90 of ten is the ninth", sorted: []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, q: 0.9, want: 9},
		{name: "p99 of ten is the max", sorted: []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, q: 0.99, want: 10},
		{name: "max", sorted: []time.Duration{1, 2, 3}, q: 1, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quantile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("quantile(%v, %v) = %v, want %v", tt.sorted, tt.q, got, tt.want)
			}
		})
	}
}

func TestSplitLatencies(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	// One upgrade at 100 ms whose old process was gone at 150 ms; with a
	// 50 ms margin the window is [100 ms, 200 ms].
	ws := upgradeWindows([]upgradeEvent{{At: 100 * time.Millisecond, Gone: 50 * time.Millisecond}}, 50*time.Millisecond)
	tests := []struct {
		name   string
		sample upgradertest.Sample
		inside bool
		failed bool
	}{
		{name: "before", sample: upgradertest.Sample{Start: at(10), Latency: time.Millisecond}},
		{name: "started before, ended inside", sample: upgradertest.Sample{Start: at(90), Latency: 20 * time.Millisecond}, inside: true},
		{name: "inside", sample: upgradertest.Sample{Start: at(120), Latency: time.Millisecond}, inside: true},
		{name: "in the margin", sample: upgradertest.Sample{Start: at(190), Latency: time.Millisecond}, inside: true},
		{name: "after", sample: upgradertest.Sample{Start: at(250), Latency: time.Millisecond}},
		{name: "failed requests are left out", sample: upgradertest.Sample{Start: at(120), Latency: time.Millisecond, Failed: true}, failed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, out := splitLatencies([]upgradertest.Sample{tt.sample}, start, ws)
			switch {
			case tt.failed && len(in)+len(out) != 0:
				t.Errorf("failed sample counted: in %v, out %v", in, out)
			case !tt.failed && tt.inside && len(in) != 1:
				t.Errorf("want inside: in %v, out %v", in, out)
			case !tt.failed && !tt.inside && len(out) != 1:
				t.Errorf("want outside: in %v, out %v", in, out)
			}
		})
	}
}

func TestPlotAndTables(t *testing.T) {
	start := time.Unix(1000, 0)
	var samples []upgradertest.Sample
	for i := range 2000 {
		samples = append(samples, upgradertest.Sample{Start: start.Add(time.Duration(i) * time.Millisecond),
			Latency: time.Duration(100+i%700) * time.Microsecond, Failed: i%500 == 0})
	}
	d := &runData{
		spec:      serviceSpec{Name: "baton"},
		loadStart: start,
		report:    &upgradertest.LoadReport{Requests: 2000, OK: 1996, Failures: map[string]int64{upgradertest.EOF: 4}, Samples: samples},
		events: []upgradeEvent{
			{At: 500 * time.Millisecond, Serving: 30 * time.Millisecond, Gone: 60 * time.Millisecond, Overlap: 55 * time.Millisecond},
			{At: 1200 * time.Millisecond, Serving: 20 * time.Millisecond, Gone: 40 * time.Millisecond, Overlap: 35 * time.Millisecond},
		},
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "plot.png")
	if err := writePlot(path, []*runData{d}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 300 {
		t.Errorf("plot is %v", b)
	}
	// A run with no failure and no upgrade draws too: gonum refuses
	// empty data.
	calm := &runData{spec: serviceSpec{Name: "tableflip"}, loadStart: start,
		report: &upgradertest.LoadReport{Requests: 1, OK: 1, Samples: samples[1:2]}}
	svg := filepath.Join(dir, "plot.svg")
	if err := writePlot(svg, []*runData{d, calm}); err != nil {
		t.Fatal(err)
	}
	assertSVGText(t, svg, "latency (ms)", "time since the load started (s)", "failed request", "re-sent")

	r := summarize(d, 50*time.Millisecond)
	if r.Upgrades != 2 || r.Failed != 4 || r.Serving.Median != 20 || r.Serving.Max != 30 {
		t.Errorf("summary: %d upgrades, %d failed, serving %+v", r.Upgrades, r.Failed, r.Serving)
	}
	times := filepath.Join(dir, "upgrade-times.svg")
	if err := writeUpgradeTimes(times, []runResult{r}); err != nil {
		t.Fatal(err)
	}
	assertSVGText(t, times, "upgrade (in the order of the run)", "time after the trigger (ms, log scale)", "baton")
	table := formatTables(results{Runs: []runResult{r}, Checks: checkTargets([]runResult{r})})
	for _, want := range []string{"baton", "FAIL  baton: no failed"} {
		if !strings.Contains(table, want) {
			t.Errorf("tables lack %q:\n%s", want, table)
		}
	}
}

func TestLineAndBarCharts(t *testing.T) {
	dir := t.TempDir()
	line := filepath.Join(dir, "line.svg")
	err := lineChart(line, chart{Title: "pause", X: "tasks", Y: "pause (ms)"}, []series{
		{Name: "median", XY: plotter.XYs{{X: 100, Y: 3}, {X: 1000, Y: 9}}},
		{Name: "max", XY: plotter.XYs{{X: 100, Y: 5}, {X: 1000, Y: 20}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertSVGText(t, line, "pause (ms)", "tasks", "median", "max")

	bars := filepath.Join(dir, "bars.png")
	err = barChart(bars, chart{Title: "errors", Y: "errors"}, []string{"wrk", "ab"}, []barSeries{
		{Name: "baton", Values: []float64{0, 0}}, {Name: "restart", Values: []float64{40, 12}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(bars); err != nil || st.Size() == 0 {
		t.Fatalf("bar chart: %v", err)
	}
	if err := barChart(bars, chart{}, []string{"a"}, []barSeries{{Name: "x", Values: []float64{1, 2}}}); err == nil {
		t.Error("a series with more values than groups was drawn")
	}
	if err := lineChart(filepath.Join(dir, "x.gif"), chart{}, nil); err == nil {
		t.Error("a .gif was written")
	}
}

// assertSVGText fails unless the SVG at path has each text.
func assertSVGText(t *testing.T, path string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range texts {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q", filepath.Base(path), want)
		}
	}
}

// TestScalePlots draws the scale mode's two figures from made-up runs:
// both files are written, as PNG, and a run without pauses or RSS samples
// is left out rather than failing the figure.
func TestScalePlots(t *testing.T) {
	dir := t.TempDir()
	var runs []scaleRun
	for i, n := range []int{1000, 10000, 100000} {
		r := scaleRun{Tasks: n, firstTrigger: time.Second}
		r.Service = fmt.Sprintf("baton-%d", n)
		r.pauses = []time.Duration{time.Duration(i+1) * time.Millisecond, time.Duration(2*i+3) * time.Millisecond}
		r.Pause = timeSummary(r.pauses)
		for k := range 20 {
			r.rss = append(r.rss, rssSample{At: time.Second + time.Duration(k-5)*100*time.Millisecond, RSS: int64(20000 + 1000*k*(i+1))})
		}
		runs = append(runs, r)
	}
	var empty scaleRun
	empty.Service = "tableflip"
	runs = append(runs, empty)
	for _, f := range []struct {
		name string
		draw func(string, []scaleRun) error
	}{{"pause.png", plotPauses}, {"rss.png", plotRSS}} {
		path := filepath.Join(dir, f.name)
		if err := f.draw(path, runs); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
			t.Fatalf("%s: %d bytes, %v", f.name, len(b), err)
		}
	}
}
