package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
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
	// CPUPerReq is the server process's CPU time (user + system) per
	// request, in microseconds: unlike req/s it hardly depends on what
	// else runs on the machine.
	CPUPerReq float64 `json:"server_cpu_us_per_request"`
}

// overheadResult compares the same handler served in several ways with
// the last variant, a plain http.Server.
type overheadResult struct {
	Clients  int              `json:"clients"`
	Duration string           `json:"duration_each"`
	Runs     []satResult      `json:"runs"`
	Variants []variantSummary `json:"variants"`
}

// variantSummary is one variant over the rounds, against the plain one.
type variantSummary struct {
	Variant string   `json:"variant"`
	Args    []string `json:"args,omitempty"`
	// Means over the rounds.
	RPS float64 `json:"mean_rps"`
	P99 float64 `json:"mean_p99_ms"`
	CPU float64 `json:"mean_server_cpu_us_per_request"`
	// Against plain, in percent: (plain - this) / plain for req/s, so
	// positive is slower; (this - plain) / plain for p99 and CPU.
	RPSOverhead float64 `json:"rps_overhead_percent"`
	P99Change   float64 `json:"p99_change_percent"`
	CPUOverhead float64 `json:"cpu_overhead_percent"`
	// RoundOverheads is the req/s overhead of each round against the plain
	// run of the same round: their spread shows how much is noise.
	RoundOverheads []float64 `json:"round_rps_overheads_percent"`
	MedianOverhead float64   `json:"median_round_rps_overhead_percent"`
	// RoundCPU is the CPU-per-request change of each round, likewise.
	RoundCPU  []float64 `json:"round_cpu_changes_percent"`
	MedianCPU float64   `json:"median_round_cpu_change_percent"`
}

type overheadConfig struct {
	Clients  int
	Duration time.Duration
	Warmup   time.Duration
	Rounds   int
	MaxReqs  int64 // per measurement
}

// runOverhead starts every variant side by side and measures them in turn,
// A/B/C/A/B/C, so that drifting load from the rest of the machine falls on
// all of them. The last variant is the reference.
func runOverhead(ctx context.Context, specs []serviceSpec, root string, cfg overheadConfig) (*overheadResult, error) {
	var svcs []*service
	defer func() {
		for _, s := range svcs {
			s.stop()
		}
	}()
	for _, spec := range specs {
		s, err := startService(spec, root)
		if err != nil {
			return nil, err
		}
		svcs = append(svcs, s)
	}
	res := &overheadResult{Clients: cfg.Clients, Duration: cfg.Duration.String()}
	byVariant := make([][]satResult, len(svcs))
	for round := 1; round <= cfg.Rounds && ctx.Err() == nil; round++ {
		for i, s := range svcs {
			pid := s.tr.all()[0]
			saturate(ctx, s.url(), cfg.Clients, cfg.Warmup, cfg.MaxReqs)
			cpu0, err := cpuTime(pid)
			if err != nil {
				return nil, err
			}
			r := saturate(ctx, s.url(), cfg.Clients, cfg.Duration, cfg.MaxReqs)
			cpu1, err := cpuTime(pid)
			if err != nil {
				return nil, err
			}
			if r.Requests > 0 {
				r.CPUPerReq = round3(float64(cpu1-cpu0) / float64(time.Microsecond) / float64(r.Requests))
			}
			r.Variant, r.Round = s.spec.Name, round
			res.Runs = append(res.Runs, r)
			byVariant[i] = append(byVariant[i], r)
			fmt.Printf("  overhead round %d %-10s %8.0f req/s  p50 %.3f ms  p99 %.3f ms  server CPU %.1f us/req  errors %d\n",
				round, r.Variant, r.RPS, r.P50, r.P99, r.CPUPerReq, r.Errors)
		}
	}
	plain := byVariant[len(byVariant)-1]
	ref := meanOf(plain)
	for i, runs := range byVariant {
		m := meanOf(runs)
		v := variantSummary{Variant: specs[i].Name, Args: specs[i].Args,
			RPS: round3(m.RPS), P99: round3(m.P99), CPU: round3(m.CPUPerReq)}
		if ref.RPS > 0 && ref.P99 > 0 && ref.CPUPerReq > 0 {
			v.RPSOverhead = round3(100 * (ref.RPS - m.RPS) / ref.RPS)
			v.P99Change = round3(100 * (m.P99 - ref.P99) / ref.P99)
			v.CPUOverhead = round3(100 * (m.CPUPerReq - ref.CPUPerReq) / ref.CPUPerReq)
		}
		for j, r := range runs {
			if j < len(plain) && plain[j].RPS > 0 && plain[j].CPUPerReq > 0 {
				v.RoundOverheads = append(v.RoundOverheads, round3(100*(plain[j].RPS-r.RPS)/plain[j].RPS))
				v.RoundCPU = append(v.RoundCPU, round3(100*(r.CPUPerReq-plain[j].CPUPerReq)/plain[j].CPUPerReq))
			}
		}
		v.MedianOverhead, v.MedianCPU = median(v.RoundOverheads), median(v.RoundCPU)
		res.Variants = append(res.Variants, v)
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

// cpuTime is the CPU time pid has used, user and system, from
// /proc/<pid>/stat, in clock ticks of 10 ms (Linux's USER_HZ is 100).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the first, utime the 12th, stime the 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times %q %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// meanOf averages the rates, p99s and CPU costs of runs.
func meanOf(runs []satResult) satResult {
	var m satResult
	for _, r := range runs {
		n := float64(len(runs))
		m.RPS += r.RPS / n
		m.P99 += r.P99 / n
		m.CPUPerReq += r.CPUPerReq / n
	}
	return m
}

func median(v []float64) float64 {
	n := len(v)
	if n == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return round3((s[n/2-1] + s[n/2]) / 2)
}
