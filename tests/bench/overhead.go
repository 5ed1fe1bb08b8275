package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// satResult is one closed-loop measurement of one variant.
type satResult struct {
	Variant  string  `json:"variant"`
	Round    int     `json:"round"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"requests_per_second"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// overheadResult compares the demo's handler served through the upgrader
// with the same handler on a plain http.Server.
type overheadResult struct {
	Clients  int         `json:"clients"`
	Duration string      `json:"duration_each"`
	Runs     []satResult `json:"runs"`
	// Means over the rounds.
	BatonRPS  float64 `json:"baton_rps"`
	PlainRPS  float64 `json:"plain_rps"`
	BatonP99  float64 `json:"baton_p99_ms"`
	PlainP99  float64 `json:"plain_p99_ms"`
	Overhead  float64 `json:"overhead_percent"` // (plain - baton) / plain
	P99Change float64 `json:"p99_change_percent"`
}

type overheadConfig struct {
	Clients  int
	Duration time.Duration
	Warmup   time.Duration
	Rounds   int
	MaxReqs  int64 // per measurement
}

// runOverhead starts both variants side by side and measures them in turn,
// A/B/A/B, so that drifting load from the rest of the machine falls on both.
func runOverhead(ctx context.Context, baton, plain serviceSpec, root string, cfg overheadConfig) (*overheadResult, error) {
	var svcs []*service
	defer func() {
		for _, s := range svcs {
			s.stop()
		}
	}()
	for _, spec := range []serviceSpec{baton, plain} {
		s, err := startService(spec, root)
		if err != nil {
			return nil, err
		}
		svcs = append(svcs, s)
	}
	res := &overheadResult{Clients: cfg.Clients, Duration: cfg.Duration.String()}
	var sum [2]struct{ rps, p99 float64 }
	for round := 1; round <= cfg.Rounds && ctx.Err() == nil; round++ {
		for i, s := range svcs {
			saturate(ctx, s.url(), cfg.Clients, cfg.Warmup, cfg.MaxReqs)
			r := saturate(ctx, s.url(), cfg.Clients, cfg.Duration, cfg.MaxReqs)
			r.Variant, r.Round = s.spec.Name, round
			res.Runs = append(res.Runs, r)
			sum[i].rps += r.RPS
			sum[i].p99 += r.P99
			fmt.Printf("  overhead round %d %-6s %8.0f req/s  p50 %.3f ms  p99 %.3f ms  errors %d\n",
				round, r.Variant, r.RPS, r.P50, r.P99, r.Errors)
		}
	}
	n := float64(cfg.Rounds)
	res.BatonRPS, res.PlainRPS = sum[0].rps/n, sum[1].rps/n
	res.BatonP99, res.PlainP99 = sum[0].p99/n, sum[1].p99/n
	if res.PlainRPS > 0 {
		res.Overhead = 100 * (res.PlainRPS - res.BatonRPS) / res.PlainRPS
	}
	if res.PlainP99 > 0 {
		res.P99Change = 100 * (res.BatonP99 - res.PlainP99) / res.PlainP99
	}
	return res, nil
}

// saturate sends GET / from clients closed-loop clients, each on one
// kept-alive connection, for d or until maxReqs requests.
func saturate(ctx context.Context, url string, clients int, d time.Duration, maxReqs int64) satResult {
	var (
		mu    sync.Mutex
		lats  []time.Duration
		errs  int64
		wg    sync.WaitGroup
		start = time.Now()
	)
	deadline := start.Add(d)
	per := maxReqs / int64(clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			own := make([]time.Duration, 0, 4096)
			var bad int64
			for n := int64(0); n < per && ctx.Err() == nil; n++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				resp, err := c.Get(url + "/")
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad++
					continue
				}
				own = append(own, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, own...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	l := latencySummary(lats)
	return satResult{Requests: int64(len(lats)), Errors: errs, Seconds: el.Seconds(),
		RPS: float64(len(lats)) / el.Seconds(), P50: l.P50, P99: l.P99}
}
