package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/demotest"
)

// codeMetrics returns the Prometheus metric names the upgrader and the
// worker define, read from their source: "baton_..." literals, and
// ns+"..." with the worker's ns, "baton_worker_".
func codeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	lit := regexp.MustCompile(`"(baton_[a-z_]+)"`)
	withNS := regexp.MustCompile(`ns\s*\+\s*"([a-z_]+)"`)
	for _, f := range []string{"upgrader/metrics.go", "worker/metrics.go"} {
		b, err := os.ReadFile(filepath.Join(demotest.Root(), f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			if m[1] != "baton_worker_" {
				names[m[1]] = true
			}
		}
		for _, m := range withNS.FindAllStringSubmatch(string(b), -1) {
			names["baton_worker_"+m[1]] = true
		}
	}
	// Sure to be there: a grep that found nothing would let anything pass.
	for _, n := range []string{"baton_upgrades_total", "baton_upgrade_failures_total", "baton_drain_duration_seconds", "baton_worker_runs_total", "baton_worker_freeze_duration_seconds"} {
		if !names[n] {
			t.Fatalf("%s not found in the code; found %v", n, names)
		}
	}
	return names
}

var (
	metricRef = regexp.MustCompile(`\bbaton_[a-z_]+`)
	resultRef = regexp.MustCompile(`result=~?"([^"]+)"`)
)

// checkExpr checks that a PromQL expression is balanced and names only
// metrics (histogram series included) and upgrade results the code has.
func checkExpr(t *testing.T, where, expr string, names map[string]bool, upgraderSrc string) {
	t.Helper()
	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		t.Errorf("%s: %q names no baton metric", where, expr)
	}
	for _, ref := range refs {
		base := ref
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(ref, suf); ok && names[b] {
				base = b
			}
		}
		if !names[base] {
			t.Errorf("%s: %q is not a metric of the code", where, ref)
		}
	}
	for _, m := range resultRef.FindAllStringSubmatch(expr, -1) {
		for _, r := range strings.Split(m[1], "|") {
			if !strings.Contains(upgraderSrc, `"`+r+`")`) {
				t.Errorf("%s: result %q is not one the upgrader exports", where, r)
			}
		}
	}
	for _, pair := range []string{"()", "{}", "[]"} {
		if strings.Count(expr, pair[:1]) != strings.Count(expr, pair[1:]) {
			t.Errorf("%s: %q has unbalanced %s", where, expr, pair)
		}
	}
}

// TestContribDashboardAndAlerts keeps contrib/ from rotting: the Grafana
// dashboard is valid JSON with the panels the README promises, the alert
// rules have the shape Prometheus loads, and every metric either names is
// one the code exports.
func TestContribDashboardAndAlerts(t *testing.T) {
	names := codeMetrics(t)
	src, err := os.ReadFile(filepath.Join(demotest.Root(), "upgrader/metrics.go"))
	if err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(demotest.Root(), "contrib/grafana/baton.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int                `json:"id"`
			Title   string             `json:"title"`
			Type    string             `json:"type"`
			GridPos struct{ W, H int } `json:"gridPos"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("baton.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("baton.json: title %q, uid %q", dash.Title, dash.UID)
	}
	ids, titles := map[int]bool{}, map[string]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] || p.Title == "" || p.Type == "" || p.GridPos.W == 0 || p.GridPos.H == 0 || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: duplicate id, or no title, type, size or target", p.ID, p.Title)
		}
		ids[p.ID], titles[p.Title] = true, true
		for _, tg := range p.Targets {
			checkExpr(t, "panel "+p.Title+" "+tg.RefID, tg.Expr, names, string(src))
		}
	}
	for _, a := range dash.Annotations.List {
		checkExpr(t, "annotation", a.Expr, names, string(src))
	}
	for _, want := range []string{"Upgrades by result", "Failures by step", "Switch time: trigger to new process ready",
		"Work pause", "Drain duration", "Forced closes", "Rolled back", "In-flight requests across generations"} {
		if !titles[want] {
			t.Errorf("baton.json has no panel %q", want)
		}
	}

	// alerts.yml, checked line by line: spaces only, groups of rules, each
	// alert with an expr, labels and annotations.
	b, err = os.ReadFile(filepath.Join(demotest.Root(), "contrib/prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := map[string]string{}
	var cur string
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "\t") {
			t.Errorf("alerts.yml:%d: a tab", i+1)
		}
		s := strings.TrimSpace(line)
		switch {
		case s == "" || strings.HasPrefix(s, "#"):
		case strings.HasPrefix(s, "- alert: "):
			cur = strings.TrimPrefix(s, "- alert: ")
			alerts[cur] = ""
		case strings.HasPrefix(s, "expr: "):
			if cur == "" {
				t.Errorf("alerts.yml:%d: expr outside an alert", i+1)
			}
			alerts[cur] = strings.TrimPrefix(s, "expr: ")
		default:
			if k, _, ok := strings.Cut(s, ":"); ok {
				seen[strings.TrimPrefix(k, "- ")] = true
			}
		}
	}
	for _, k := range []string{"groups", "name", "rules", "labels", "severity", "annotations", "summary", "description"} {
		if !seen[k] {
			t.Errorf("alerts.yml has no %q key", k)
		}
	}
	for _, want := range []string{"BatonUpgradeFailed", "BatonUpgradeRolledBack"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("alerts.yml has no alert %s", want)
		}
	}
	for name, expr := range alerts {
		if expr == "" {
			t.Errorf("alert %s has no expr", name)
			continue
		}
		checkExpr(t, "alert "+name, expr, names, string(src))
	}
	if !strings.Contains(alerts["BatonUpgradeFailed"], `result="failure"`) || !strings.Contains(alerts["BatonUpgradeRolledBack"], `result="rolled_back"`) {
		t.Errorf("alerts: failed %q, rolled back %q", alerts["BatonUpgradeFailed"], alerts["BatonUpgradeRolledBack"])
	}
}
