package upgradertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LoadConfig describes the load. Zero fields take the defaults noted.
type LoadConfig struct {
	// URL is the service's base URL, such as http://127.0.0.1:8080.
	URL string
	// Clients is the number of concurrent clients. Zero means 32.
	Clients int
	// Fresh is the share of clients that open a new connection for every
	// request; the others keep one connection alive. Zero means none.
	Fresh float64
	// Post is the share of requests that are POSTs to PostPath with a body that
	// must come back unchanged; the others are GET /. Zero means none.
	Post float64
	// Rate bounds the total requests per second. Zero means 2000.
	Rate int
	// MaxRequests bounds the total number of requests. Zero means 10 million.
	MaxRequests int64
	// Timeout bounds one request. Zero means 5 s.
	Timeout time.Duration
	// Latencies, if set, keeps one Sample per request.
	Latencies bool
	// GetPath is the path of the GET requests, which must answer 200.
	// Empty means "/".
	GetPath string
	// PostPath is the path of the POST requests, which must answer 200
	// with the body they were sent. Empty means "/echo".
	PostPath string
}

// Failure kinds, the keys of LoadReport.Failures.
const (
	Refused = "refused"
	Reset   = "reset"
	EOF     = "eof"
	Timeout = "timeout"
	Status  = "status"
	Body    = "body"
	Other   = "other"
)

// Sample is one request's outcome.
type Sample struct {
	Start   time.Time
	Latency time.Duration
	Pid     int
	Failed  bool
}

// LoadReport is what the clients saw.
type LoadReport struct {
	Requests int64
	OK       int64
	// Gets counts successful GET / requests.
	Gets int64
	// Retried counts requests Go's client sent more than once.
	Retried  int64
	Failures map[string]int64
	// Errors keeps the first few failures, for the test log.
	Errors []string
	// Pids counts successful replies by their X-Pid header (0 without).
	Pids    map[int]int64
	Samples []Sample
}

// Failed is the number of failed requests.
func (r *LoadReport) Failed() int64 {
	var n int64
	for _, v := range r.Failures {
		n += v
	}
	return n
}

func (r *LoadReport) String() string {
	return fmt.Sprintf("requests=%d ok=%d failed=%d retried=%d failures=%v pids=%d errors=%q",
		r.Requests, r.OK, r.Failed(), r.Retried, r.Failures, len(r.Pids), r.Errors)
}

// RunLoad sends requests until ctx is done or the request bound is reached, and
// returns when every client has stopped.
func RunLoad(ctx context.Context, cfg LoadConfig) *LoadReport {
	cfg = cfg.withDefaults()
	var (
		report = &LoadReport{Failures: map[string]int64{}, Pids: map[int]int64{}}
		budget = make(chan struct{}, cfg.Clients)
		wg     sync.WaitGroup
		mu     sync.Mutex // guards report
	)
	wg.Go(func() { pace(ctx, cfg, budget) })
	fresh := int(cfg.Fresh*float64(cfg.Clients) + 0.5)
	for i := 0; i < cfg.Clients; i++ {
		c := &client{cfg: cfg, id: i, rng: rand.New(rand.NewPCG(uint64(i), 7))}
		c.http = &http.Client{
			Timeout: cfg.Timeout,
			Transport: &http.Transport{
				DisableKeepAlives:   i < fresh,
				MaxIdleConnsPerHost: 1,
				DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			},
		}
		wg.Go(func() {
			defer c.http.CloseIdleConnections()
			for range budget {
				s, kind, err := c.do(ctx)
				mu.Lock()
				report.add(cfg, s, kind, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(report.Samples, func(i, j int) bool { return report.Samples[i].Start.Before(report.Samples[j].Start) })
	return report
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg LoadConfig) withDefaults() LoadConfig {
	if cfg.Clients <= 0 {
		cfg.Clients = 32
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 2000
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 10_000_000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.GetPath == "" {
		cfg.GetPath = "/"
	}
	if cfg.PostPath == "" {
		cfg.PostPath = "/echo"
	}
	return cfg
}

// pace hands out request tokens on budget at the bounded rate, up to the
// request bound or until ctx is done, and then closes budget.
func pace(ctx context.Context, cfg LoadConfig, budget chan<- struct{}) {
	defer close(budget)
	interval := time.Second / time.Duration(cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := int64(0); n < cfg.MaxRequests; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case budget <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
}

// add counts one request's outcome.
func (r *LoadReport) add(cfg LoadConfig, s outcome, kind string, err error) {
	r.Requests++
	if s.Retried {
		r.Retried++
	}
	if err != nil {
		r.Failures[kind]++
		if len(r.Errors) < 10 {
			r.Errors = append(r.Errors, err.Error())
		}
	} else {
		r.OK++
		r.Pids[s.Pid]++
		if s.Get {
			r.Gets++
		}
	}
	if cfg.Latencies {
		r.Samples = append(r.Samples, Sample{Start: s.Start, Latency: s.Latency, Pid: s.Pid, Failed: err != nil})
	}
}

type client struct {
	cfg  LoadConfig
	id   int
	rng  *rand.Rand
	http *http.Client
}

type outcome struct {
	Start   time.Time
	Latency time.Duration
	Pid     int
	Retried bool
	Get     bool
}

func (c *client) do(ctx context.Context) (outcome, string, error) {
	var (
		req  *http.Request
		body []byte
		err  error
	)
	// A request in flight when ctx ends is still answered: the load stops
	// sending, it does not abandon what it sent.
	rctx := context.WithoutCancel(ctx)
	if c.rng.Float64() < c.cfg.Post {
		body = make([]byte, 64+c.rng.IntN(1024))
		for i := range body {
			body[i] = byte(c.rng.IntN(256))
		}
		req, err = http.NewRequestWithContext(rctx, http.MethodPost, c.cfg.URL+c.cfg.PostPath, bytes.NewReader(body))
	} else {
		req, err = http.NewRequestWithContext(rctx, http.MethodGet, c.cfg.URL+c.cfg.GetPath, nil)
	}
	if err != nil {
		return outcome{}, Other, err
	}
	conns := 0
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { conns++ },
	}))
	o := outcome{Start: time.Now(), Get: body == nil}
	resp, err := c.http.Do(req)
	o.Retried = conns > 1
	if err != nil {
		o.Latency = time.Since(o.Start)
		return o, kindOf(err), err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.Latency = time.Since(o.Start)
	if err != nil {
		return o, kindOf(err), err
	}
	if resp.StatusCode != http.StatusOK {
		return o, Status, fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	if body != nil && !bytes.Equal(got, body) {
		return o, Body, fmt.Errorf("POST %s: %d bytes back for %d sent", req.URL.Path, len(got), len(body))
	}
	// X-Pid, if the service sets it, says which process answered.
	if h := resp.Header.Get("X-Pid"); h != "" {
		if o.Pid, err = strconv.Atoi(h); err != nil {
			return o, Body, fmt.Errorf("%s %s: bad X-Pid %q", req.Method, req.URL.Path, h)
		}
	}
	return o, "", nil
}

func kindOf(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's name for an EOF on a reused connection; the error
		// value is not exported.
		strings.Contains(err.Error(), "server closed idle connection"):
		return EOF
	case errors.As(err, &ne) && ne.Timeout():
		return Timeout
	}
	return Other
}
