package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/load"
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
		sample load.Sample
		inside bool
		failed bool
	}{
		{name: "before", sample: load.Sample{Start: at(10), Latency: time.Millisecond}},
		{name: "started before, ended inside", sample: load.Sample{Start: at(90), Latency: 20 * time.Millisecond}, inside: true},
		{name: "inside", sample: load.Sample{Start: at(120), Latency: time.Millisecond}, inside: true},
		{name: "in the margin", sample: load.Sample{Start: at(190), Latency: time.Millisecond}, inside: true},
		{name: "after", sample: load.Sample{Start: at(250), Latency: time.Millisecond}},
		{name: "failed requests are left out", sample: load.Sample{Start: at(120), Latency: time.Millisecond, Failed: true}, failed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, out := splitLatencies([]load.Sample{tt.sample}, start, ws)
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

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line           string
		msg, key, want string
		pid            int
	}{
		{
			line: `time=2026-11-25T22:19:16.587Z level=INFO msg=serving pid=1836 generation=0 addr=127.0.0.1:43393 version=dev`,
			msg:  "serving", pid: 1836, key: "addr", want: "127.0.0.1:43393",
		},
		{
			line: `time=x level=ERROR msg="upgrade failed: still serving" pid=7 generation=0 err="parent hasn't exited"`,
			msg:  "upgrade failed: still serving", pid: 7, key: "err", want: "parent hasn't exited",
		},
		{
			// A repeated key keeps its first value, as the pid does.
			line: `time=x level=INFO msg="state restored" pid=9 upgrade=1-1 generation=1 upgrade=2-1 bytes=49478 took=7.230328ms`,
			msg:  "state restored", pid: 9, key: "upgrade", want: "1-1",
		},
	}
	for _, tt := range tests {
		l := parseLogLine(tt.line)
		if l.msg != tt.msg || l.pid != tt.pid || l.fields[tt.key] != tt.want {
			t.Errorf("parseLogLine(%q) = msg %q pid %d %s=%q; want %q %d %q", tt.line, l.msg, l.pid, tt.key, l.fields[tt.key], tt.msg, tt.pid, tt.want)
		}
	}
}

func TestPlotAndTables(t *testing.T) {
	start := time.Unix(1000, 0)
	var samples []load.Sample
	for i := range 2000 {
		samples = append(samples, load.Sample{Start: start.Add(time.Duration(i) * time.Millisecond),
			Latency: time.Duration(100+i%700) * time.Microsecond, Failed: i%500 == 0})
	}
	d := &runData{
		spec:      serviceSpec{Name: "baton"},
		loadStart: start,
		report:    &load.Report{Requests: 2000, OK: 1996, Failures: map[string]int64{load.EOF: 4}, Samples: samples},
		events: []upgradeEvent{
			{At: 500 * time.Millisecond, Serving: 30 * time.Millisecond, Gone: 60 * time.Millisecond, Overlap: 55 * time.Millisecond},
			{At: 1200 * time.Millisecond, Serving: 20 * time.Millisecond, Gone: 40 * time.Millisecond, Overlap: 35 * time.Millisecond},
		},
	}
	path := filepath.Join(t.TempDir(), "plot.png")
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
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() < panelH {
		t.Errorf("plot is %v", b)
	}

	r := summarize(d, 50*time.Millisecond)
	if r.Upgrades != 2 || r.Failed != 4 || r.Serving.Median != 20 || r.Serving.Max != 30 {
		t.Errorf("summary: %d upgrades, %d failed, serving %+v", r.Upgrades, r.Failed, r.Serving)
	}
	table := formatTables(results{Runs: []runResult{r}, Checks: checkTargets([]runResult{r})})
	for _, want := range []string{"baton", "FAIL  baton: no failed"} {
		if !strings.Contains(table, want) {
			t.Errorf("tables lack %q:\n%s", want, table)
		}
	}
}
