package main

// Parsers of what wrk, h2load and ab print (and of the per-request files
// h2load and ab write), into one shape: requests, errors by the names the
// tool gives them, requests/s and the p50 and p99 latency.

import (
	"bufio"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// toolOutput is what one run of a tool reported.
type toolOutput struct {
	// Requests is the number of responses the tool counted (wrk: "N
	// requests in", h2load: done, ab: complete requests).
	Requests int64 `json:"requests"`
	// Errors are the tool's own counters, by its names, zeros left out;
	// ErrorTotal is their sum without double counts.
	Errors     map[string]int64 `json:"errors"`
	ErrorTotal int64            `json:"error_total"`
	RPS        float64          `json:"requests_per_second"`
	P50MS      float64          `json:"p50_ms"`
	P99MS      float64          `json:"p99_ms"`
	// Aborted is the tool's own message when it stopped before its time
	// (ab gives up after 10 failed connects).
	Aborted string `json:"aborted,omitempty"`
}

func (o *toolOutput) addError(name string, n int64) {
	if n == 0 {
		return
	}
	if o.Errors == nil {
		o.Errors = map[string]int64{}
	}
	o.Errors[name] += n
}

// errorCell is the errors as a table cell: "0", or the total and its parts.
func (o toolOutput) errorCell() string {
	if o.ErrorTotal == 0 && len(o.Errors) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o.Errors)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, o.Errors[k]))
	}
	return fmt.Sprintf("%d (%s)", o.ErrorTotal, strings.Join(parts, ", "))
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkBadBody  = regexp.MustCompile(`(?m)^bad bodies: (\d+)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
)

// parseWrk reads wrk --latency's report, and the "bad bodies: N" line the
// POST script prints.
func parseWrk(out string) (toolOutput, error) {
	var o toolOutput
	m := wrkRequests.FindStringSubmatch(out)
	r := wrkRPS.FindStringSubmatch(out)
	if m == nil || r == nil {
		return o, fmt.Errorf("wrk: no \"N requests in\" or \"Requests/sec\" line in its output:\n%s", tail(out, 20))
	}
	o.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	o.RPS, _ = strconv.ParseFloat(r[1], 64)
	if s := wrkSocket.FindStringSubmatch(out); s != nil {
		for i, name := range []string{"connect", "read", "write", "timeout"} {
			n, _ := strconv.ParseInt(s[i+1], 10, 64)
			o.addError(name, n)
		}
	}
	if s := wrkNon2xx.FindStringSubmatch(out); s != nil {
		n, _ := strconv.ParseInt(s[1], 10, 64)
		o.addError("non-2xx/3xx", n)
	}
	if s := wrkBadBody.FindStringSubmatch(out); s != nil {
		n, _ := strconv.ParseInt(s[1], 10, 64)
		o.addError("bad body", n)
	}
	for _, n := range o.Errors {
		o.ErrorTotal += n
	}
	pcts := wrkPct.FindAllStringSubmatch(out, -1)
	if len(pcts) != 2 {
		return o, fmt.Errorf("wrk: no 50%% and 99%% lines (run it with --latency):\n%s", tail(out, 20))
	}
	for _, p := range pcts {
		v, _ := strconv.ParseFloat(p[2], 64)
		v *= map[string]float64{"us": 1e-3, "ms": 1, "s": 1e3}[p[3]]
		if p[1] == "50" {
			o.P50MS = v
		} else {
			o.P99MS = v
		}
	}
	return o, nil
}

var (
	h2Finished = regexp.MustCompile(`(?m)^finished in [\d.]+m?s, ([\d.]+) req/s`)
	h2Requests = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2Status   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// parseH2load reads h2load's report. Its "failed" counts every request
// that did not succeed ("errored", connection-level, of which "timeout",
// and non-2xx/3xx statuses); the parts shown are errored (less timeout),
// timeout, 4xx and 5xx. h2load prints no percentiles: they come from its
// --log-file (parseH2loadLog).
func parseH2load(out string) (toolOutput, error) {
	var o toolOutput
	f := h2Finished.FindStringSubmatch(out)
	r := h2Requests.FindStringSubmatch(out)
	s := h2Status.FindStringSubmatch(out)
	if f == nil || r == nil || s == nil {
		return o, fmt.Errorf("h2load: no \"finished in\", \"requests:\" or \"status codes:\" line in its output:\n%s", tail(out, 20))
	}
	n := func(x string) int64 { v, _ := strconv.ParseInt(x, 10, 64); return v }
	o.RPS, _ = strconv.ParseFloat(f[1], 64)
	o.Requests = n(r[3])
	failed, errored, timeout := n(r[5]), n(r[6]), n(r[7])
	o.addError("errored", errored-timeout)
	o.addError("timeout", timeout)
	o.addError("4xx", n(s[3]))
	o.addError("5xx", n(s[4]))
	o.ErrorTotal = failed
	return o, nil
}

// h2loadLog is h2load's --log-file: a line per request, "start (µs since
// the epoch) TAB status TAB µs to the end of the response".
type h2loadLog struct {
	starts []int64 // µs since the epoch
	lats   []time.Duration
	ok     []bool
}

func parseH2loadLog(text string) (h2loadLog, error) {
	var l h2loadLog
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			return l, fmt.Errorf("h2load log: line %q is not start, status, duration", sc.Text())
		}
		start, err1 := strconv.ParseInt(f[0], 10, 64)
		status, err2 := strconv.Atoi(f[1])
		us, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return l, fmt.Errorf("h2load log: line %q: not numbers", sc.Text())
		}
		l.starts = append(l.starts, start)
		l.lats = append(l.lats, time.Duration(us)*time.Microsecond)
		l.ok = append(l.ok, status >= 200 && status < 400)
	}
	return l, sc.Err()
}

// percentiles are the p50 and p99 of the successful requests, in ms.
func (l h2loadLog) percentiles() (p50, p99 float64) {
	var ok []time.Duration
	for i, d := range l.lats {
		if l.ok[i] {
			ok = append(ok, d)
		}
	}
	slices.Sort(ok)
	return ms(quantile(ok, 0.5)), ms(quantile(ok, 0.99))
}

// startedFrom counts the requests started at t or later.
func (l h2loadLog) startedFrom(t time.Time) int64 {
	us := t.UnixMicro()
	var n int64
	for _, s := range l.starts {
		if s >= us {
			n++
		}
	}
	return n
}

var (
	abComplete = regexp.MustCompile(`(?m)^Complete requests:\s+(\d+)`)
	abFailed   = regexp.MustCompile(`(?m)^Failed requests:\s+(\d+)`)
	abParts    = regexp.MustCompile(`(?m)^\s+\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)`)
	abWrite    = regexp.MustCompile(`(?m)^Write errors:\s+(\d+)`)
	abNon2xx   = regexp.MustCompile(`(?m)^Non-2xx responses:\s+(\d+)`)
	abRPS      = regexp.MustCompile(`(?m)^Requests per second:\s+([\d.]+)`)
	abPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+(\d+)`)
	abAborted  = regexp.MustCompile(`(?m)^Test aborted after (\d+) failures`)
	abAPR      = regexp.MustCompile(`(?m)^(apr_\w+(\(\))?: .*)$`)
	abTotal    = regexp.MustCompile(`(?m)^Total of (\d+) requests completed`)
)

// parseAB reads ab's report. Failed requests are broken down by ab into
// connect, receive, length and exceptions; write errors and non-2xx
// responses are counted apart. ab prints its percentiles in whole ms; the
// -e CSV (parseABCSV) has them to the µs and replaces these when given.
func parseAB(out string) (toolOutput, error) {
	var o toolOutput
	n := func(x string) int64 { v, _ := strconv.ParseInt(x, 10, 64); return v }
	if a := abAborted.FindStringSubmatch(out); a != nil {
		// ab gives up after more than 10 failed connects, with no
		// report but a count of what completed.
		o.Aborted = a[0]
		if e := abAPR.FindStringSubmatch(out); e != nil {
			o.Aborted += ": " + strings.TrimSpace(e[1])
		}
		o.addError("connect, then ab gave up", n(a[1]))
		o.ErrorTotal = n(a[1])
		if t := abTotal.FindStringSubmatch(out); t != nil {
			o.Requests = n(t[1])
		}
		return o, nil
	}
	c := abComplete.FindStringSubmatch(out)
	r := abRPS.FindStringSubmatch(out)
	if c == nil || r == nil {
		if e := abAPR.FindStringSubmatch(out); e != nil {
			o.Aborted = strings.TrimSpace(e[1])
			return o, nil // ab stopped on an error it does not count
		}
		return o, fmt.Errorf("ab: no \"Complete requests\" or \"Requests per second\" line in its output:\n%s", tail(out, 20))
	}
	o.Requests = n(c[1])
	o.RPS, _ = strconv.ParseFloat(r[1], 64)
	if f := abFailed.FindStringSubmatch(out); f != nil {
		o.ErrorTotal = n(f[1])
	}
	if p := abParts.FindStringSubmatch(out); p != nil {
		for i, name := range []string{"connect", "receive", "length", "exceptions"} {
			o.addError(name, n(p[i+1]))
		}
	}
	for _, x := range []struct {
		re   *regexp.Regexp
		name string
	}{{abWrite, "write"}, {abNon2xx, "non-2xx"}} {
		if m := x.re.FindStringSubmatch(out); m != nil {
			o.addError(x.name, n(m[1]))
			o.ErrorTotal += n(m[1])
		}
	}
	for _, p := range abPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		if p[1] == "50" {
			o.P50MS = v
		} else {
			o.P99MS = v
		}
	}
	return o, nil
}

// parseABCSV reads ab -e's file: "Percentage served,Time in ms", then a
// line per percentage from 0 to 100, and returns the 50th and the 99th.
func parseABCSV(text string) (p50, p99 float64, err error) {
	found := 0
	for _, line := range strings.Split(text, "\n") {
		pct, v, ok := strings.Cut(strings.TrimSpace(line), ",")
		if !ok || (pct != "50" && pct != "99") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("ab csv: line %q: %w", line, err)
		}
		if pct == "50" {
			p50 = f
		} else {
			p99 = f
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("ab csv: no 50 and 99 lines")
	}
	return p50, p99, nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
