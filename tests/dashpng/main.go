// Command dashpng draws contrib/grafana/baton.json as one PNG: every panel's
// PromQL, with the dashboard's variables filled in as Grafana would, is
// evaluated by a real Prometheus over its HTTP API, and the results are
// drawn with gonum/plot at the panel's place on the dashboard's 24-column
// grid. It is not Grafana (none is packaged where baton is built): the
// queries and the layout are the dashboard's, the drawing is gonum's.
//
//	go run ./tests/dashpng -prometheus http://127.0.0.1:9091 -since 2026-12-03T14:30:00Z -out docs/dashboard.png
//
// tests/dashpng/session.sh makes the data: it starts Debian's prometheus
// and baton-demo under load, runs a series of upgrades (one refused by the
// new process, one rolled back during its probation) and then this command.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dashpng:", err)
		os.Exit(1)
	}
}

func run() error {
	dashboard := flag.String("dashboard", "contrib/grafana/baton.json", "the Grafana dashboard `file`")
	prom := flag.String("prometheus", "http://127.0.0.1:9090", "the Prometheus `URL`")
	since := flag.String("since", "", "start of the range, RFC 3339 (default: -last before the end)")
	until := flag.String("until", "", "end of the range, RFC 3339 (default: now)")
	last := flag.Duration("last", 10*time.Minute, "length of the range when -since is not given")
	step := flag.Duration("step", 2*time.Second, "query resolution")
	rateInterval := flag.Duration("rate-interval", 15*time.Second, "$__rate_interval (Grafana: at least 4 scrape intervals)")
	job := flag.String("job", ".*", "$job (a regexp, as Grafana's All)")
	instance := flag.String("instance", ".*", "$instance (a regexp)")
	out := flag.String("out", "docs/dashboard.png", "the PNG to write")
	flag.Parse()

	end := time.Now()
	if *until != "" {
		t, err := time.Parse(time.RFC3339, *until)
		if err != nil {
			return fmt.Errorf("-until: %w", err)
		}
		end = t
	}
	start := end.Add(-*last)
	if *since != "" {
		t, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			return fmt.Errorf("-since: %w", err)
		}
		start = t
	}
	d, err := loadDashboard(*dashboard)
	if err != nil {
		return err
	}
	vars := Vars{Job: *job, Instance: *instance, RateInterval: *rateInterval, Range: end.Sub(start)}
	q := newQuerier(*prom, start, end, *step, vars)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := map[int][]Series{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			var s []Series
			if p.Type == "stat" {
				s, err = q.instantQuery(ctx, tg)
			} else {
				s, err = q.rangeQuery(ctx, tg)
			}
			if err != nil {
				return fmt.Errorf("panel %q: %w", p.Title, err)
			}
			data[p.ID] = append(data[p.ID], s...)
		}
	}
	sub := fmt.Sprintf("%s to %s UTC, step %v, $__rate_interval %v: the dashboard's queries evaluated by Prometheus, drawn by gonum/plot (not a Grafana screenshot)",
		start.UTC().Format("2006-01-02 15:04:05"), end.UTC().Format("15:04:05"), *step, *rateInterval)
	if err := render(d, data, start, end, sub, *out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d panels\n", *out, len(d.Panels))
	return nil
}
