package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Series is one line of a panel: its legend and its points.
type Series struct {
	Name   string
	Times  []time.Time
	Values []float64 // NaN where Prometheus returned NaN (no data in a window)
}

// querier evaluates a dashboard's queries on a Prometheus over its HTTP API
// (/api/v1/query_range and /api/v1/query).
type querier struct {
	base       string
	client     *http.Client
	start, end time.Time
	step       time.Duration
	vars       Vars
}

func newQuerier(base string, start, end time.Time, step time.Duration, vars Vars) *querier {
	return &querier{base: base, client: &http.Client{Timeout: 30 * time.Second}, start: start, end: end, step: step, vars: vars}
}

// apiReply is the envelope of Prometheus's query API.
type apiReply struct {
	Status    string   `json:"status"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	ErrorType string   `json:"errorType"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`  // vector: [unix seconds, "value"]
			Values [][2]any          `json:"values"` // matrix
		} `json:"result"`
	} `json:"data"`
}

// rangeQuery evaluates a panel target from start to end, one point a step.
func (q *querier) rangeQuery(ctx context.Context, tg Target) ([]Series, error) {
	expr := expand(tg.Expr, q.vars)
	r, err := q.get(ctx, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {unix(q.start)}, "end": {unix(q.end)}, "step": {strconv.FormatFloat(q.step.Seconds(), 'f', -1, 64)}})
	if err != nil {
		return nil, fmt.Errorf("query_range %s: %w", expr, err)
	}
	if r.Data.ResultType != "matrix" {
		return nil, fmt.Errorf("query_range %s: a %s, not a matrix", expr, r.Data.ResultType)
	}
	var out []Series
	for _, res := range r.Data.Result {
		s := Series{Name: legend(tg.LegendFormat, res.Metric)}
		for _, p := range res.Values {
			t, v, err := point(p)
			if err != nil {
				return nil, fmt.Errorf("query_range %s: %w", expr, err)
			}
			s.Times, s.Values = append(s.Times, t), append(s.Values, v)
		}
		out = append(out, s)
	}
	return out, nil
}

// instantQuery evaluates a stat panel's target at the end of the range.
func (q *querier) instantQuery(ctx context.Context, tg Target) ([]Series, error) {
	expr := expand(tg.Expr, q.vars)
	r, err := q.get(ctx, "/api/v1/query", url.Values{"query": {expr}, "time": {unix(q.end)}})
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: a %s, not a vector", expr, r.Data.ResultType)
	}
	var out []Series
	for _, res := range r.Data.Result {
		t, v, err := point(res.Value)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", expr, err)
		}
		out = append(out, Series{Name: legend(tg.LegendFormat, res.Metric), Times: []time.Time{t}, Values: []float64{v}})
	}
	return out, nil
}

func (q *querier) get(ctx context.Context, path string, params url.Values) (*apiReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.base+path+"?"+params.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r apiReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	if len(r.Warnings) > 0 {
		return nil, fmt.Errorf("warnings: %v", r.Warnings)
	}
	return &r, nil
}

// point decodes one [unix seconds, "value"] pair; values are strings so
// that NaN and ±Inf survive JSON.
func point(p [2]any) (time.Time, float64, error) {
	ts, ok1 := p[0].(float64)
	vs, ok2 := p[1].(string)
	if !ok1 || !ok2 {
		return time.Time{}, 0, fmt.Errorf("bad sample %v", p)
	}
	v, err := strconv.ParseFloat(vs, 64)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("bad sample %v: %w", p, err)
	}
	return time.Unix(0, int64(ts*1e9)), v, nil
}

func unix(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64)
}

// finite reports whether any value of the series is a number.
func (s Series) finite() bool {
	for _, v := range s.Values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			return true
		}
	}
	return false
}
