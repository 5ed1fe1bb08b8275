package main

// The tool benchmark (-mode tools): the load comes from the HTTP
// benchmarking tools users have (wrk, h2load, ab) instead of the driver's
// own Go client, one run of a tool per row and service, through the same
// upgrades as the other modes (the same service, trigger and pidfd code).
// It writes tools.md (the table), tools.json, a figure per measure and
// each tool's output under raw/.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// toolFlags are the flags of -mode tools; -upgrades, -interval, -warmup,
// -cooldown and -out are the common ones.
var toolFlags struct {
	rows     string
	services string
	conns    int
	duration time.Duration
}

func init() {
	flag.StringVar(&toolFlags.rows, "tool-rows", strings.Join(toolRowKeys(), ","),
		"-mode tools: comma-separated client configurations to run")
	flag.StringVar(&toolFlags.services, "tool-services", "baton,tableflip,restart",
		"-mode tools: comma-separated services each row runs against")
	flag.IntVar(&toolFlags.conns, "tool-conns", 32, "-mode tools: connections each tool keeps open")
	flag.DurationVar(&toolFlags.duration, "tool-duration", 0,
		"-mode tools: how long each tool runs (0: -warmup, the upgrades at -interval, slack, -cooldown)")
}

// toolRow is one client configuration: a tool and its arguments.
type toolRow struct {
	Key   string // for -tool-rows, the files and the figures' groups
	Label string // for the table
	Tool  string // the program
	// Proto is what the row needs of the service: "h1" (HTTP/1.1 in clear
	// text), "h2c" (HTTP/2 in clear text, prior knowledge) or "h2"
	// (HTTPS, HTTP/2 by ALPN).
	Proto string
	args  func(t toolTarget) []string
	parse func(out string, t toolTarget) (toolOutput, error)
}

// toolTarget is what a row's arguments and parser need: the service's
// URLs, the run's directory and the tool's duration.
type toolTarget struct {
	url      string // http://127.0.0.1:port
	tlsURL   string // https://127.0.0.1:port, for "h2" rows
	dir      string
	conns    int
	duration time.Duration
}

func (t toolTarget) secs() string { return strconv.Itoa(int(math.Ceil(t.duration.Seconds()))) }
func (t toolTarget) c() string    { return strconv.Itoa(t.conns) }

// wrkPost is the Lua script of the wrk POST row: POST /echo with a
// 1,020-byte body, and a count of replies whose body is not the one sent,
// which each thread keeps and done() adds up.
const wrkPost = `wrk.method = "POST"
wrk.body = string.rep("baton ", 170)
wrk.headers["Content-Type"] = "application/octet-stream"
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status == 200 and body ~= wrk.body then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("bad bodies: %d\n", n))
end
`

// toolRows are every client configuration, in the table's order.
func toolRows() []toolRow {
	wrk := func(extra ...string) func(t toolTarget) []string {
		return func(t toolTarget) []string {
			return append([]string{"-t2", "-c" + t.c(), "-d" + t.secs() + "s", "--latency"}, extra...)
		}
	}
	h2load := func(proto string) func(t toolTarget) []string {
		return func(t toolTarget) []string {
			args := []string{"-t2", "-c" + t.c(), "-D", t.secs(), "--log-file=" + filepath.Join(t.dir, "h2load.log")}
			switch proto {
			case "h1":
				return append(args, "--h1", t.url+"/")
			case "h2c":
				return append(args, t.url+"/")
			}
			return append(args, t.tlsURL+"/")
		}
	}
	ab := func(keepAlive bool) func(t toolTarget) []string {
		return func(t toolTarget) []string {
			args := []string{"-l", "-r", "-c", t.c(), "-t", t.secs(), "-n", "100000000", "-e", filepath.Join(t.dir, "ab.csv")}
			if keepAlive {
				args = append([]string{"-k"}, args...)
			}
			return append(args, t.url+"/")
		}
	}
	return []toolRow{
		{Key: "wrk-get", Label: "wrk, GET /, keep-alive", Tool: "wrk", Proto: "h1",
			args: func(t toolTarget) []string { return append(wrk()(t), t.url+"/") }, parse: parseWrkRow},
		{Key: "wrk-post", Label: "wrk, POST /echo (Lua script, 1 KB body checked)", Tool: "wrk", Proto: "h1",
			args: func(t toolTarget) []string {
				return append(wrk("-s", filepath.Join(t.dir, "post.lua"))(t), t.url+"/echo")
			}, parse: parseWrkRow},
		{Key: "wrk-close", Label: "wrk, GET /, `Connection: close`", Tool: "wrk", Proto: "h1",
			args: func(t toolTarget) []string { return append(wrk("-H", "Connection: close")(t), t.url+"/") }, parse: parseWrkRow},
		{Key: "h2load-h1", Label: "h2load --h1, GET /", Tool: "h2load", Proto: "h1", args: h2load("h1"), parse: parseH2loadRow},
		{Key: "h2load-h2c", Label: "h2load, HTTP/2 in clear text (h2c), GET /", Tool: "h2load", Proto: "h2c", args: h2load("h2c"), parse: parseH2loadRow},
		{Key: "h2load-h2", Label: "h2load, HTTPS (HTTP/2 by ALPN), GET /", Tool: "h2load", Proto: "h2", args: h2load("h2"), parse: parseH2loadRow},
		{Key: "ab-k", Label: "ab -k -l -r, GET /", Tool: "ab", Proto: "h1", args: ab(true), parse: parseABRow},
		{Key: "ab", Label: "ab -l -r (no keep-alive), GET /", Tool: "ab", Proto: "h1", args: ab(false), parse: parseABRow},
	}
}

func toolRowKeys() []string {
	var keys []string
	for _, r := range toolRows() {
		keys = append(keys, r.Key)
	}
	return keys
}

func parseWrkRow(out string, _ toolTarget) (toolOutput, error) { return parseWrk(out) }

// parseH2loadRow reads h2load's report and its log, for the percentiles.
func parseH2loadRow(out string, t toolTarget) (toolOutput, error) {
	o, err := parseH2load(out)
	if err != nil {
		return o, err
	}
	l, err := readH2loadLog(t.dir)
	if err != nil {
		return o, err
	}
	o.P50MS, o.P99MS = l.percentiles()
	return o, nil
}

func readH2loadLog(dir string) (h2loadLog, error) {
	b, err := os.ReadFile(filepath.Join(dir, "h2load.log"))
	if err != nil {
		return h2loadLog{}, fmt.Errorf("h2load log: %w", err)
	}
	return parseH2loadLog(string(b))
}

// parseABRow reads ab's report, with the percentiles of its -e file.
func parseABRow(out string, t toolTarget) (toolOutput, error) {
	o, err := parseAB(out)
	if err != nil || o.Aborted != "" {
		return o, err // an ab that gave up wrote no CSV
	}
	b, err := os.ReadFile(filepath.Join(t.dir, "ab.csv"))
	if err != nil {
		return o, fmt.Errorf("ab csv: %w", err)
	}
	o.P50MS, o.P99MS, err = parseABCSV(string(b))
	return o, err
}

// toolConfig is what every run of the tool benchmark does.
type toolConfig struct {
	Upgrade  runConfig // Upgrades, Interval, Warmup, Cooldown, Settle, StepLimit, ProbeEvery
	Conns    int
	Duration time.Duration
}

// toolDuration is how long each tool runs when not told: the warm-up, the
// upgrades at their interval with 50% to spare (an upgrade under
// saturation waits longer for the old process), and the cool-down.
func toolDuration(rc runConfig) time.Duration {
	d := rc.Warmup + time.Duration(rc.Upgrades)*rc.Interval*3/2 + rc.Cooldown
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}

// toolResult is one run: a row's tool against one service.
type toolResult struct {
	Row     string `json:"row"`
	Label   string `json:"label"`
	Service string `json:"service"`
	// Skipped says why the cell cannot exist.
	Skipped  string     `json:"skipped,omitempty"`
	Args     []string   `json:"args,omitempty"`
	Seconds  float64    `json:"tool_seconds"`
	Upgrades int        `json:"upgrades"`
	Output   toolOutput `json:"output"`
	// StartedAfterFirstUpgrade counts h2load's requests started after
	// the first trigger, from its log.
	StartedAfterFirstUpgrade *int64    `json:"started_after_first_upgrade,omitempty"`
	Serving                  timeStats `json:"trigger_to_new_pid_serving"`
	Gone                     timeStats `json:"trigger_to_old_pid_gone"`
	// Exit is the tool's exit status when not 0; Err what else went
	// wrong (an upgrade that failed, output that did not parse).
	Exit string `json:"tool_exit,omitempty"`
	Err  string `json:"error,omitempty"`
}

// toolReport is what tools.json holds.
type toolReport struct {
	Machine  machine      `json:"machine"`
	Started  time.Time    `json:"started"`
	Command  string       `json:"command"`
	Upgrades int          `json:"upgrades_per_run"`
	Interval string       `json:"interval"`
	Conns    int          `json:"connections"`
	Versions []string     `json:"tool_versions"`
	Results  []toolResult `json:"results"`
}

// measureTools is -mode tools: every row of -tool-rows against every
// service of -tool-services, then the table, tools.json and the figures.
func measureTools(ctx context.Context, f flags, bins programs, root string) error {
	rows, err := pickRows(toolFlags.rows)
	if err != nil {
		return err
	}
	specs := bins.upgradeSpecs(f.stateArgs)
	var services []serviceSpec
	for _, name := range strings.Split(toolFlags.services, ",") {
		spec, ok := specs[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("-tool-services: unknown service %q", name)
		}
		services = append(services, spec)
	}
	cfg := toolConfig{Upgrade: f.runConfig(), Conns: toolFlags.conns, Duration: toolFlags.duration}
	if cfg.Duration == 0 {
		cfg.Duration = toolDuration(cfg.Upgrade)
	}
	rep := toolReport{Machine: describeMachine(), Started: time.Now().UTC(), Command: "go run ./tests/bench " + strings.Join(os.Args[1:], " "),
		Upgrades: cfg.Upgrade.Upgrades, Interval: cfg.Upgrade.Interval.String(), Conns: cfg.Conns, Versions: toolVersions()}
	fmt.Print(rep.Machine.String())
	if err := os.MkdirAll(filepath.Join(f.out, "raw"), 0o755); err != nil {
		return err
	}
	for _, row := range rows {
		for _, spec := range services {
			fmt.Printf("%s against %s: %v, %d upgrades ...\n", row.Key, spec.Name, cfg.Duration, cfg.Upgrade.Upgrades)
			r, out := runToolRow(ctx, row, spec, root, cfg)
			if out != "" {
				raw := filepath.Join(f.out, "raw", row.Key+"-"+spec.Name+".txt")
				if err := os.WriteFile(raw, []byte(strings.Join(append([]string{row.Tool}, r.Args...), " ")+"\n\n"+out), 0o644); err != nil {
					return err
				}
			}
			if r.Err != "" {
				fmt.Fprintf(os.Stderr, "%s against %s: %s\n", row.Key, spec.Name, r.Err)
			}
			rep.Results = append(rep.Results, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return writeToolReport(f.out, rep)
}

func pickRows(list string) ([]toolRow, error) {
	all := toolRows()
	var rows []toolRow
	for _, key := range strings.Split(list, ",") {
		i := slices.IndexFunc(all, func(r toolRow) bool { return r.Key == strings.TrimSpace(key) })
		if i < 0 {
			return nil, fmt.Errorf("-tool-rows: unknown row %q (rows: %s)", key, strings.Join(toolRowKeys(), ", "))
		}
		rows = append(rows, all[i])
	}
	return rows, nil
}

// toolVersions are the tools' own version lines.
func toolVersions() []string {
	var out []string
	for _, c := range [][]string{{"wrk", "-v"}, {"h2load", "--version"}, {"ab", "-V"}} {
		b, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out = append(out, c[0]+": "+strings.TrimSpace(first))
	}
	return out
}

// runToolRow runs row's tool against a new instance of spec while it goes
// through cfg's upgrades, and returns the result and the tool's output.
func runToolRow(ctx context.Context, row toolRow, spec serviceSpec, root string, cfg toolConfig) (toolResult, string) {
	r := toolResult{Row: row.Key, Label: row.Label, Service: spec.Name, Seconds: cfg.Duration.Seconds()}
	if row.Proto != "h1" && spec.Name == "tableflip" {
		r.Skipped = "the tableflip recipe (tests/tfbaseline) serves HTTP/1.1 in clear text only"
		return r, ""
	}
	dir, err := os.MkdirTemp(root, row.Key+"-"+spec.Name+"-")
	if err != nil {
		r.Err = err.Error()
		return r, ""
	}
	t := toolTarget{dir: dir, conns: cfg.Conns, duration: cfg.Duration}
	spec, tlsAddr, err := withProto(spec, row.Proto, dir)
	if err == nil && row.Key == "wrk-post" {
		err = os.WriteFile(filepath.Join(dir, "post.lua"), []byte(wrkPost), 0o644)
	}
	if err != nil {
		r.Err = err.Error()
		return r, ""
	}
	s, err := startService(spec, root)
	if err != nil {
		r.Err = err.Error()
		return r, ""
	}
	t.url, t.tlsURL = s.url(), "https://"+tlsAddr
	r.Args = row.args(t)
	out, events, runErr := loadThroughUpgrades(ctx, s, row.Tool, r.Args, cfg)
	if err := s.stop(); err != nil && runErr == nil {
		runErr = err
	}
	r.Upgrades = len(events)
	r.Serving, r.Gone = eventStats(events)
	var exit *exec.ExitError
	if errors.As(runErr, &exit) {
		r.Exit, runErr = exit.String(), nil
	}
	o, perr := row.parse(out, t)
	r.Output = o
	if row.Tool == "h2load" && len(events) > 0 {
		if l, err := readH2loadLog(dir); err == nil {
			n := l.startedFrom(events[0].trigger)
			r.StartedAfterFirstUpgrade = &n
		}
	}
	if err := errors.Join(runErr, perr); err != nil {
		r.Err = err.Error()
	}
	os.RemoveAll(dir) // the h2load log is large; the output is kept under raw/
	return r, out
}

// withProto adds what a row's protocol needs to spec's arguments: -h2c,
// or HTTPS on a port of its own with a self-signed certificate, whose
// address it returns.
func withProto(spec serviceSpec, proto, dir string) (serviceSpec, string, error) {
	spec.Args = slices.Clone(spec.Args)
	switch proto {
	case "h2c":
		spec.Args = append(spec.Args, "-h2c")
	case "h2":
		cert, key, err := selfSignedCert(dir)
		if err != nil {
			return spec, "", err
		}
		addr, err := freeLocalAddr()
		if err != nil {
			return spec, "", err
		}
		spec.Args = append(spec.Args, "-tls-cert", cert, "-tls-key", key, "-tls-addr", addr)
		return spec, addr, nil
	}
	return spec, "", nil
}

// loadThroughUpgrades runs the tool for its duration and, from -warmup on,
// triggers up to cfg's upgrades, each once the previous old process is
// gone and -interval after the previous trigger, while at least -cooldown
// of the tool's time is left. It returns the tool's output and the
// upgrades.
func loadThroughUpgrades(ctx context.Context, s *service, tool string, args []string, cfg toolConfig) (string, []upgradeEvent, error) {
	rc := cfg.Upgrade
	tctx, cancel := context.WithTimeout(ctx, cfg.Duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(tctx, tool, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", tool, err)
	}
	start := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	pause(ctx, rc.Warmup)
	var (
		events   []upgradeEvent
		upErr    error
		cur      = s.tr.all()[0]
		known    = map[int]bool{cur: true}
		next     = time.Now()
		lastFrom = start.Add(cfg.Duration - rc.Cooldown)
	)
	for i := 0; i < rc.Upgrades && ctx.Err() == nil; i++ {
		pause(ctx, time.Until(next))
		if time.Now().After(lastFrom) {
			break
		}
		ev, err := s.upgrade(ctx, cur, known, rc)
		next = later(ev.trigger.Add(rc.Interval), ev.gone.Add(rc.Settle))
		if err != nil {
			upErr = fmt.Errorf("upgrade %d: %w\n%s", i+1, err, s.logs.Tail(20))
			break
		}
		ev.At = ev.trigger.Sub(start)
		events = append(events, ev)
		known[ev.NewPid] = true
		cur = ev.NewPid
	}
	err := <-exited
	return out.String(), events, errors.Join(upErr, err)
}

func eventStats(events []upgradeEvent) (serving, gone timeStats) {
	var sv, gn []time.Duration
	for _, e := range events {
		sv, gn = append(sv, e.Serving), append(gn, e.Gone)
	}
	return timeSummary(sv), timeSummary(gn)
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key to dir.
func selfSignedCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("certificate key: %w", err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// freeLocalAddr is a port of 127.0.0.1 that was free a moment ago, below
// the kernel's ephemeral range (32768 and up), so that none of the
// thousands of connections the tools open takes it first. The HTTPS
// listener needs a port of its own: the upgrader names handed-over
// listeners by address, and a second 127.0.0.1:0 is refused.
func freeLocalAddr() (string, error) {
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+mrand.IntN(12000)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr, nil
		}
	}
	return "", errors.New("no free port between 20000 and 32000 on 127.0.0.1")
}

// writeToolReport prints the table and writes tools.md, tools.json and
// the figures to dir.
func writeToolReport(dir string, rep toolReport) error {
	if err := writeReport(dir, "tools.md", formatToolTable(rep), "tools.json", rep); err != nil {
		return err
	}
	if err := writeToolFigures(dir, rep); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s\n", dir)
	var failed []string
	for _, r := range rep.Results {
		if r.Err != "" {
			failed = append(failed, r.Row+"/"+r.Service)
		}
	}
	if len(failed) > 0 {
		return errors.New("runs with errors: " + strings.Join(failed, ", "))
	}
	return nil
}

// formatToolTable is the markdown table: a line per row and service.
func formatToolTable(rep toolReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d connections per tool, %.0f s per run, up to %d upgrades per run (the next once the old process is gone, at least %s after the previous trigger)\n\n",
		rep.Conns, firstSeconds(rep), rep.Upgrades, rep.Interval)
	b.WriteString("| client | service | upgrades | requests | errors (the tool's counters) | requests/s | p50 ms | p99 ms | new pid serving / old pid gone, median ms | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		if r.Skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | | | n/a | | | | | %s |\n", r.Label, r.Service, r.Skipped)
			continue
		}
		o := r.Output
		rps, p50, p99 := strconv.FormatFloat(o.RPS, 'f', 0, 64), fmtMS(o.P50MS), fmtMS(o.P99MS)
		if o.RPS == 0 {
			rps, p50, p99 = "-", "-", "-" // the tool printed no report
		}
		times := ""
		if r.Upgrades > 0 {
			times = fmt.Sprintf("%.1f / %.1f", r.Serving.Median, r.Gone.Median)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", r.Label, r.Service, r.Upgrades,
			o.Requests, o.errorCell(), rps, p50, p99, times, toolNote(r))
	}
	return b.String()
}

func firstSeconds(rep toolReport) float64 {
	for _, r := range rep.Results {
		if r.Seconds > 0 {
			return r.Seconds
		}
	}
	return 0
}

func fmtMS(v float64) string {
	if v >= 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// toolNote is what the table's last column says of a run.
func toolNote(r toolResult) string {
	var notes []string
	if r.StartedAfterFirstUpgrade != nil {
		notes = append(notes, fmt.Sprintf("%d requests started after the first trigger", *r.StartedAfterFirstUpgrade))
	}
	if r.Output.Aborted != "" {
		notes = append(notes, "ab: "+r.Output.Aborted)
	}
	if r.Exit != "" {
		notes = append(notes, r.Exit)
	}
	if r.Err != "" {
		first, _, _ := strings.Cut(r.Err, "\n")
		notes = append(notes, "error: "+first)
	}
	return strings.ReplaceAll(strings.Join(notes, "; "), "|", "/")
}

// barValue is r's bar in a figure of the tool benchmark and its label: a
// cell that cannot exist is n/a, and a tool that gave up says so.
func barValue(r toolResult, value func(toolOutput) float64) (float64, string) {
	if r.Skipped != "" {
		return 0, "n/a"
	}
	v := value(r.Output)
	label := strconv.FormatFloat(v, 'f', -1, 64)
	switch {
	case v >= 100:
		label = strconv.FormatFloat(v, 'f', 0, 64)
	case v != math.Trunc(v):
		label = strconv.FormatFloat(v, 'f', 1, 64)
	}
	if r.Output.Aborted != "" {
		if v == 0 {
			return 0, "gave up"
		}
		label += " (gave up)"
	}
	return v, label
}

// writeToolFigures draws errors, requests/s and p99 per row, a bar per
// service; a cell that cannot exist has no bar.
func writeToolFigures(dir string, rep toolReport) error {
	return writeToolFiguresExt(dir, rep, ".svg")
}

// writeToolFiguresExt is writeToolFigures in the format of ext (".svg",
// ".png").
func writeToolFiguresExt(dir string, rep toolReport, ext string) error {
	var groups, services []string
	for _, r := range rep.Results {
		if !slices.Contains(groups, r.Row) {
			groups = append(groups, r.Row)
		}
		if !slices.Contains(services, r.Service) {
			services = append(services, r.Service)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	sub := fmt.Sprintf("%d upgrades per run, %d connections, %.0f s per run", rep.Upgrades, rep.Conns, firstSeconds(rep))
	for _, fig := range []struct {
		file, title, y string
		value          func(toolOutput) float64
	}{
		{"tools-errors", "Errors the tools counted through the upgrades (" + sub + ")", "errors (requests)",
			func(o toolOutput) float64 { return float64(o.ErrorTotal) }},
		{"tools-rps", "Requests per second as the tools report them (" + sub + ")", "requests/s",
			func(o toolOutput) float64 { return o.RPS }},
		{"tools-p99", "p99 latency as the tools report it (" + sub + ")", "p99 latency (ms)",
			func(o toolOutput) float64 { return o.P99MS }},
	} {
		var bars []barSeries
		for _, svc := range services {
			bs := barSeries{Name: svc, Values: make([]float64, len(groups)), Labels: make([]string, len(groups))}
			for _, r := range rep.Results {
				if r.Service != svc {
					continue
				}
				i := slices.Index(groups, r.Row)
				bs.Values[i], bs.Labels[i] = barValue(r, fig.value)
			}
			bars = append(bars, bs)
		}
		c := chart{Title: fig.title, X: "client (tableflip: HTTP/1.1 rows only)", Y: fig.y}
		if err := barChart(filepath.Join(dir, fig.file+ext), c, groups, bars); err != nil {
			return err
		}
	}
	return nil
}
