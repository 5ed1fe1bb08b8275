package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Dashboard is the part of a Grafana dashboard JSON the picture needs.
type Dashboard struct {
	Title  string  `json:"title"`
	Panels []Panel `json:"panels"`
}

// Panel is one panel: where it sits on the 24-column grid and its queries.
type Panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"` // "stat" or "timeseries"
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"` // null: the base step
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []Target `json:"targets"`
}

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string `json:"refId"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
}

// loadDashboard reads a dashboard JSON file, its panels sorted by their
// place on the grid (top to bottom, left to right).
func loadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sort.SliceStable(d.Panels, func(i, j int) bool {
		a, b := d.Panels[i].GridPos, d.Panels[j].GridPos
		if a.Y != b.Y {
			return a.Y < b.Y
		}
		return a.X < b.X
	})
	return &d, nil
}

// Vars are the values Grafana would substitute into a query.
type Vars struct {
	Job, Instance string        // regexps, as the dashboard's template variables with All
	RateInterval  time.Duration // $__rate_interval
	Range         time.Duration // $__range
}

// expand substitutes the dashboard's variables in expr as Grafana does
// before it sends the query to Prometheus.
func expand(expr string, v Vars) string {
	r := strings.NewReplacer(
		"$__rate_interval", promDuration(v.RateInterval),
		"${__rate_interval}", promDuration(v.RateInterval),
		"$__range", promDuration(v.Range),
		"${__range}", promDuration(v.Range),
		"${job}", v.Job, "$job", v.Job,
		"${instance}", v.Instance, "$instance", v.Instance,
	)
	return r.Replace(expr)
}

// promDuration writes d as Prometheus reads a range: whole seconds.
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
}

var legendRef = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// legend fills a legendFormat ("{{instance}} {{network}}") with a series'
// labels, as Grafana does; an empty format names the series by its labels.
func legend(format string, labels map[string]string) string {
	if format == "" {
		var parts []string
		for k, v := range labels {
			parts = append(parts, k+"="+v)
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return legendRef.ReplaceAllStringFunc(format, func(m string) string {
		return labels[legendRef.FindStringSubmatch(m)[1]]
	})
}
