package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const dashboardPath = "../../contrib/grafana/baton.json"

// TestLoadDashboardMatchesJSON: every panel of the dashboard, and every
// query of each, reaches the picture as the JSON has it (read here a
// second way, as plain maps).
func TestLoadDashboardMatchesJSON(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Panels []map[string]any `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if len(d.Panels) != len(raw.Panels) || len(d.Panels) < 17 {
		t.Fatalf("%d panels loaded, the JSON has %d (and at least 17)", len(d.Panels), len(raw.Panels))
	}
	byID := map[int]Panel{}
	for _, p := range d.Panels {
		byID[p.ID] = p
	}
	for _, rp := range raw.Panels {
		p, ok := byID[int(rp["id"].(float64))]
		if !ok {
			t.Errorf("panel %v not loaded", rp["id"])
			continue
		}
		gp := rp["gridPos"].(map[string]any)
		if p.Title != rp["title"] || p.Type != rp["type"] || p.GridPos.X != int(gp["x"].(float64)) ||
			p.GridPos.Y != int(gp["y"].(float64)) || p.GridPos.W != int(gp["w"].(float64)) || p.GridPos.H != int(gp["h"].(float64)) {
			t.Errorf("panel %v: loaded %+v, JSON %v", rp["id"], p, rp)
		}
		targets := rp["targets"].([]any)
		if len(targets) != len(p.Targets) {
			t.Errorf("panel %q: %d targets loaded, %d in the JSON", p.Title, len(p.Targets), len(targets))
			continue
		}
		for i, rt := range targets {
			rt := rt.(map[string]any)
			if p.Targets[i].Expr != rt["expr"] || p.Targets[i].RefID != rt["refId"] {
				t.Errorf("panel %q target %d: loaded %+v, JSON %v", p.Title, i, p.Targets[i], rt)
			}
			if lf, _ := rt["legendFormat"].(string); p.Targets[i].LegendFormat != lf {
				t.Errorf("panel %q target %d: legend %q, JSON %q", p.Title, i, p.Targets[i].LegendFormat, lf)
			}
		}
	}
	for i := 1; i < len(d.Panels); i++ {
		a, b := d.Panels[i-1].GridPos, d.Panels[i].GridPos
		if a.Y > b.Y || (a.Y == b.Y && a.X > b.X) {
			t.Errorf("panels not in grid order: %+v before %+v", a, b)
		}
	}
}

// TestExpand: the queries Prometheus gets carry no Grafana variable.
func TestExpand(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	v := Vars{Job: "baton-demo", Instance: ".*", RateInterval: 15 * time.Second, Range: 4*time.Minute + 400*time.Millisecond}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			e := expand(tg.Expr, v)
			if strings.Contains(e, "$") {
				t.Errorf("panel %q: %q keeps a variable", p.Title, e)
			}
		}
	}
	got := expand(`sum(increase(baton_upgrades_total{job=~"$job", instance=~"$instance"}[$__range])) + rate(x[$__rate_interval])`, v)
	want := `sum(increase(baton_upgrades_total{job=~"baton-demo", instance=~".*"}[240s])) + rate(x[15s])`
	if got != want {
		t.Errorf("expand: %s\nwant      %s", got, want)
	}
}

func TestLegendAndFormat(t *testing.T) {
	for _, c := range []struct{ format, want string }{
		{"{{instance}} {{network}}", "h1:8080 tcp"},
		{"{{ instance }} in flight", "h1:8080 in flight"},
		{"", "{instance=h1:8080, network=tcp}"},
	} {
		if got := legend(c.format, map[string]string{"instance": "h1:8080", "network": "tcp"}); got != c.want {
			t.Errorf("legend(%q) = %q, want %q", c.format, got, c.want)
		}
	}
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.0234, "s", "23.4 ms"}, {2, "s", "2 s"}, {176128, "bytes", "172 KiB"}, {3, "short", "3"}, {12.5, "ops", "12.5/s"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

// TestRender draws the dashboard from made-up series: the program runs to
// a PNG without a Prometheus (the real picture needs one: session.sh).
func TestRender(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data := map[int][]Series{}
	for _, p := range d.Panels {
		s := Series{Name: p.Title}
		for i := range 10 {
			s.Times = append(s.Times, now.Add(time.Duration(i)*time.Second))
			s.Values = append(s.Values, float64(i%3))
		}
		data[p.ID] = []Series{s}
	}
	out := filepath.Join(t.TempDir(), "d.png")
	if err := render(d, data, now, now.Add(10*time.Second), "test", out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("not a PNG: %d bytes, %v", len(b), err)
	}
}
