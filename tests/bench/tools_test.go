package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The fixtures are the tools' output from runs of -mode tools (wrk 4.1.0,
// h2load 1.52.0, ab 2.3), against a plain restart where they counted
// errors.
func TestParseToolOutputs(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) (toolOutput, error)
		file  string
		want  toolOutput
	}{
		{name: "wrk socket errors", parse: parseWrk, file: "wrk-get-restart.txt", want: toolOutput{
			Requests: 107368, Errors: map[string]int64{"read": 89, "write": 2433}, ErrorTotal: 2522,
			RPS: 35729.43, P50MS: 0.672, P99MS: 17.28}},
		{name: "wrk POST script", parse: parseWrk, file: "wrk-post-baton.txt", want: toolOutput{
			Requests: 95937, RPS: 31782.59, P50MS: 0.767, P99MS: 14.43}},
		{name: "h2load", parse: parseH2load, file: "h2load-h2-baton.txt", want: toolOutput{
			Requests: 15160, RPS: 5053.33}},
		{name: "ab failed requests", parse: parseAB, file: "ab-restart.txt", want: toolOutput{
			Requests: 15681, Errors: map[string]int64{"receive": 958, "exceptions": 555}, ErrorTotal: 1513,
			RPS: 5225.03, P50MS: 4, P99MS: 57}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got.Requests != tt.want.Requests || got.ErrorTotal != tt.want.ErrorTotal || got.RPS != tt.want.RPS ||
				got.P50MS != tt.want.P50MS || got.P99MS != tt.want.P99MS || got.errorCell() != tt.want.errorCell() {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseToolOddities(t *testing.T) {
	// wrk prints these two lines only when they are not zero (its
	// printf formats).
	out := readFixture(t, "wrk-post-baton.txt") + "  Non-2xx or 3xx responses: 7\nbad bodies: 2\n"
	o, err := parseWrk(strings.Replace(out, "bad bodies: 0\n", "", 1))
	if err != nil || o.ErrorTotal != 9 || o.errorCell() != "9 (bad body 2, non-2xx/3xx 7)" {
		t.Errorf("wrk non-2xx and bad bodies: %+v, %v", o, err)
	}
	if _, err := parseWrk("Running 3s test\n"); err == nil {
		t.Error("wrk output with no report parsed")
	}
	h2 := "finished in 1.00s, 10.00 req/s, 1KB/s\nrequests: 12 total, 12 started, 10 done, 7 succeeded, 3 failed, 2 errored, 1 timeout\n" +
		"status codes: 7 2xx, 0 3xx, 1 4xx, 0 5xx\n"
	if o, err := parseH2load(h2); err != nil || o.ErrorTotal != 3 || o.errorCell() != "3 (4xx 1, errored 1, timeout 1)" {
		t.Errorf("h2load failures: %+v, %v", o, err)
	}
	o, err = parseAB(readFixture(t, "ab-k-restart.txt"))
	if err != nil || o.Aborted != "Test aborted after 10 failures: apr_socket_connect(): Connection reset by peer (104)" ||
		o.Requests != 31987 || o.ErrorTotal != 10 || o.RPS != 0 {
		t.Errorf("ab aborted: %+v, %v", o, err)
	}
	l, err := parseH2loadLog("1000000\t200\t1000\n2000000\t200\t3000\n3000000\t503\t9000\n")
	if err != nil {
		t.Fatal(err)
	}
	if p50, p99 := l.percentiles(); p50 != 1 || p99 != 3 {
		t.Errorf("h2load log percentiles (2xx only) %v %v, want 1 3", p50, p99)
	}
	if n := l.startedFrom(time.UnixMicro(2000000)); n != 2 {
		t.Errorf("started from 2 s: %d, want 2", n)
	}
	p50, p99, err := parseABCSV("Percentage served,Time in ms\n0,0.018\n50,0.412\n99,3.250\n100,17.0\n")
	if err != nil || p50 != 0.412 || p99 != 3.25 {
		t.Errorf("ab csv: %v %v %v", p50, p99, err)
	}
}

// TestToolsThroughUpgrades is the CI-sized tool benchmark: each row's tool
// for 4 s against baton-demo through 3 upgrades, and wrk with `Connection:
// close` against a plain restart. Baton must give every tool 0 errors;
// the restart's run must parse (its errors are measured, not asserted).
// The full run is `go run ./tests/bench -mode tools` (BENCHMARKS.md).
//
// The tools saturate the CPUs, and go test runs other packages' tests at
// the same time: the test, the services and the tools run at the lowest
// priority, so that the others keep their timing (under this load at
// normal priority TestH2loadUpgrades lost pipelined requests 4 times in 6).
func TestToolsThroughUpgrades(t *testing.T) {
	for _, tool := range []string{"wrk", "h2load", "ab"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (Debian: apt-get install wrk nghttp2-client apache2-utils; .ci/run installs them): %v", tool, err)
		}
	}
	lowestPriority(t)
	root := t.TempDir()
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	bins, err := buildPrograms(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	specs := bins.upgradeSpecs("")
	cfg := toolConfig{Conns: 16, Duration: 4 * time.Second, Upgrade: runConfig{Upgrades: 3, Interval: 200 * time.Millisecond,
		Warmup: 500 * time.Millisecond, Cooldown: 500 * time.Millisecond, Settle: 20 * time.Millisecond,
		StepLimit: 30 * time.Second, ProbeEvery: time.Millisecond}}
	rep := toolReport{Upgrades: 3, Conns: cfg.Conns, Interval: "200ms"}
	for _, row := range toolRows() {
		r, out := runToolRow(t.Context(), row, specs["baton"], root, cfg)
		rep.Results = append(rep.Results, r)
		o := r.Output
		t.Logf("%s: %d upgrades, %d requests, errors %s, %.0f req/s, p50 %.2f ms, p99 %.2f ms",
			row.Key, r.Upgrades, o.Requests, o.errorCell(), o.RPS, o.P50MS, o.P99MS)
		switch {
		case r.Err != "" || r.Exit != "":
			t.Errorf("%s: %s %s\n%s", row.Key, r.Exit, r.Err, out)
		case r.Upgrades != 3:
			t.Errorf("%s: %d upgrades, want 3", row.Key, r.Upgrades)
		case o.ErrorTotal != 0 || len(o.Errors) != 0:
			t.Errorf("%s: baton through 3 upgrades: errors %s\n%s", row.Key, o.errorCell(), out)
		case o.Requests == 0 || o.RPS <= 0 || o.P50MS <= 0 || o.P99MS < o.P50MS:
			t.Errorf("%s: output not read: %+v\n%s", row.Key, o, out)
		case row.Tool == "h2load" && r.StartedAfterFirstUpgrade == nil:
			t.Errorf("%s: h2load's log not read", row.Key)
		}
	}

	rows, err := pickRows("wrk-close,h2load-h2c")
	if err != nil {
		t.Fatal(err)
	}
	r, out := runToolRow(t.Context(), rows[0], specs["restart"], root, cfg)
	rep.Results = append(rep.Results, r)
	t.Logf("restart, %s: %d upgrades, %d requests, errors %s", r.Row, r.Upgrades, r.Output.Requests, r.Output.errorCell())
	if r.Err != "" || r.Upgrades != 3 || r.Output.Requests == 0 {
		t.Errorf("restart, %s: %d upgrades, %+v, %s\n%s", r.Row, r.Upgrades, r.Output, r.Err, out)
	}
	skipped, _ := runToolRow(t.Context(), rows[1], specs["tableflip"], root, cfg)
	if skipped.Skipped == "" {
		t.Errorf("tableflip ran h2c: %+v", skipped)
	}
	rep.Results = append(rep.Results, skipped)

	dir := t.TempDir()
	if err := writeToolReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile(filepath.Join(dir, "tools.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| wrk, GET /, keep-alive | baton | 3 |", "| restart | 3 |", "| n/a |"} {
		if !strings.Contains(string(table), want) {
			t.Errorf("tools.md lacks %q:\n%s", want, table)
		}
	}
	assertSVGText(t, filepath.Join(dir, "tools-errors.svg"), "errors (requests)", "wrk-get", "baton", "restart", "n/a")
	os.Remove(filepath.Join(dir, "tools.md"))
	if err := replot(dir); err != nil {
		t.Fatal(err)
	}
	if again, err := os.ReadFile(filepath.Join(dir, "tools.md")); err != nil || string(again) != string(table) {
		t.Errorf("replot's tools.md differs (%v):\n%s", err, again)
	}
}

// lowestPriority sets every thread of the test process to nice 19. The
// nice value is a thread's, and threads and processes inherit it from the
// thread that makes them: the Go runtime's later threads, the services
// and the tools all run at 19 too. It cannot be raised back unprivileged,
// which is fine for this package's tests.
func lowestPriority(t *testing.T) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("setpriority %d: %v", tid, err)
		}
	}
}
