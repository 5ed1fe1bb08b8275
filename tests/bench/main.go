// Command bench measures baton's upgrades against the canonical tableflip
// way (tests/tfbaseline) and a plain restart, under the same HTTP load, and
// the steady-state cost of the upgrader.
//
//	go run ./tests/bench
//
// It builds baton-demo and tests/tfbaseline into a temporary directory and
// upgrades each of these services in turn, on 127.0.0.1, under the load of
// upgradertest:
//
//	baton        baton-demo as shipped (a 2,000-entry map as state)
//	baton-nokv   baton-demo -kv-entries=0: the upgrader's own state only
//	baton-min    tests/tfbaseline -server=baton: the baseline's program on
//	             baton's upgrader, so that only the library differs
//	tableflip    tests/tfbaseline: tableflip's README recipe
//	restart      baton-demo stopped (SIGTERM, wait for the exit) and
//	             started again on the same port
//	baton-state  baton-demo with -state-args (-kv-entries=100000)
//
// Each service gets -upgrades triggers (SIGHUP, or the restart), each once
// the previous old process is gone, and every process the driver started,
// and every generation those started, is stopped by pidfd at the end. Then
// it times cold starts of the binaries, and serves the same handler
// through baton-demo, through the upgrader alone and on a plain
// http.Server, alternating, at saturation.
//
// It prints the tables and writes table.txt, results.json,
// upgrade-latency.png and upgrade-times.svg to -out (tests/bench/out, ignored by git, unless
// told). BENCHMARKS.md at the module root explains the numbers.
//
// -mode tools puts the load of wrk, h2load and ab on baton-demo, the
// tableflip recipe and a plain restart through the same upgrades instead
// (tools.go); -mode replot draws the figures of a committed run again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

type flags struct {
	out       string
	services  string
	mode      string
	clients   int
	fresh     float64
	post      float64
	rate      int
	upgrades  int
	interval  time.Duration
	margin    time.Duration
	warmup    time.Duration
	cooldown  time.Duration
	demoArgs  string
	stateArgs string
	ohDur     time.Duration
	ohRounds  int
	ohClients int
	cold      int
	scale     scaleFlags // scale.go
}

func parseFlags() flags {
	var f flags
	flag.StringVar(&f.out, "out", filepath.Join(demotest.Root(), "tests", "bench", "out"),
		"`directory` for results.json, table.txt and upgrade-latency.png")
	flag.StringVar(&f.mode, "mode", "all", "what to measure: all, upgrades, overhead, tools (wrk, h2load and ab through upgrades: tools.go) or scale (scale.go: -tasks, -state-entries); replot draws -out's results.json again")
	flag.StringVar(&f.services, "services", "baton,baton-nokv,baton-min,tableflip,restart,baton-state",
		"comma-separated services to upgrade: baton (baton-demo as shipped), baton-nokv (-kv-entries=0), "+
			"baton-min (tests/tfbaseline -server=baton), tableflip, restart, baton-state (-state-args)")
	flag.IntVar(&f.clients, "clients", 32, "concurrent clients of the upgrade load")
	flag.Float64Var(&f.fresh, "fresh", 0.5, "share of clients that open a new connection for every request")
	flag.Float64Var(&f.post, "post", 0.5, "share of requests that are POST /echo")
	flag.IntVar(&f.rate, "rate", 2000, "bound on the load's requests per second")
	flag.IntVar(&f.upgrades, "upgrades", 20, "upgrades per service")
	flag.DurationVar(&f.interval, "interval", 200*time.Millisecond, "least time between two triggers")
	flag.DurationVar(&f.margin, "margin", 50*time.Millisecond, "added to each upgrade window after the old process is gone")
	flag.DurationVar(&f.warmup, "warmup", time.Second, "load before the first upgrade")
	flag.DurationVar(&f.cooldown, "cooldown", time.Second, "load after the last upgrade")
	flag.StringVar(&f.demoArgs, "demo-args", "", "extra arguments for every baton-demo process, space-separated")
	flag.StringVar(&f.stateArgs, "state-args", "-kv-entries=100000", "extra arguments for baton-demo in the baton-state run, such as \"-kv-entries=100000 -tasks=10000\"")
	flag.DurationVar(&f.ohDur, "overhead-duration", 3*time.Second, "length of each saturation measurement")
	flag.IntVar(&f.ohRounds, "overhead-rounds", 8, "rounds of the saturation measurement, each measuring every variant once")
	flag.IntVar(&f.ohClients, "overhead-clients", 16, "closed-loop keep-alive clients of the saturation measurement")
	flag.IntVar(&f.cold, "cold-starts", 10, "cold starts (exec to first reply, no upgrade) timed per binary; 0 skips them")
	f.scale.register()
	flag.Parse()
	return f
}

func main() {
	if err := run(parseFlags()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// results is what results.json holds.
type results struct {
	Machine  machine         `json:"machine"`
	Started  time.Time       `json:"started"`
	Load     loadJSON        `json:"load"`
	Runs     []runResult     `json:"runs"`
	Cold     []coldStart     `json:"cold_starts,omitempty"`
	Ratios   *ratios         `json:"ratios,omitempty"`
	Checks   []check         `json:"checks,omitempty"`
	Overhead *overheadResult `json:"overhead,omitempty"`
}

type loadJSON struct {
	Clients  int     `json:"clients"`
	Fresh    float64 `json:"fresh"`
	Post     float64 `json:"post"`
	Rate     int     `json:"rate"`
	Upgrades int     `json:"upgrades"`
	Interval string  `json:"interval"`
	Margin   string  `json:"window_margin"`
}

func run(f flags) error {
	switch f.mode {
	case "all", "upgrades", "overhead", "tools", "scale":
	case "replot":
		return replot(f.out) // plot.go
	default:
		return fmt.Errorf("-mode must be all, upgrades, overhead, tools, scale or replot, not %q", f.mode)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "baton-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	// The tracker compares /proc/<pid>/exe with the binary's path, which
	// the kernel reports with symlinks resolved.
	if tmp, err = filepath.EvalSymlinks(tmp); err != nil {
		return err
	}
	bins, err := buildPrograms(tmp, strings.Fields(f.demoArgs))
	if err != nil {
		return err
	}
	if f.mode == "tools" {
		return measureTools(ctx, f, bins, tmp) // tools.go
	}

	res := results{Machine: describeMachine(), Started: time.Now().UTC(),
		Load: loadJSON{Clients: f.clients, Fresh: f.fresh, Post: f.post, Rate: f.rate,
			Upgrades: f.upgrades, Interval: f.interval.String(), Margin: f.margin.String()}}
	fmt.Print(res.Machine.String())
	if f.mode == "scale" {
		return runScale(ctx, f, bins, tmp, res.Machine)
	}

	var data []*runData
	if f.mode != "overhead" {
		if data, err = measureUpgrades(ctx, f, bins.upgradeSpecs(f.stateArgs), tmp, &res); err != nil {
			return err
		}
	}
	if f.mode != "upgrades" {
		oh, err := measureOverhead(ctx, f, bins, tmp)
		if err != nil {
			return err
		}
		res.Overhead = oh
		res.Checks = append(res.Checks, overheadChecks(oh)...)
	}
	if err := writeResults(f.out, res, data); err != nil {
		return err
	}
	return stoppedEarly(data)
}

// programs are the binaries the bench builds and the arguments every
// baton-demo process gets.
type programs struct {
	demo     string // cmd/baton-demo
	base     string // tests/tfbaseline: tableflip and plain
	min      string // tests/tfbaseline -tags baton: the same program on baton's upgrader
	demoArgs []string
}

// buildPrograms builds baton-demo and tests/tfbaseline into dir:
// tests/tfbaseline twice, alone for tableflip and plain, and with -tags
// baton for the same program on baton's upgrader.
func buildPrograms(dir string, demoArgs []string) (programs, error) {
	p := programs{demo: filepath.Join(dir, "baton-demo"), base: filepath.Join(dir, "tfbaseline"),
		min: filepath.Join(dir, "tfbaseline-baton"), demoArgs: demoArgs}
	fmt.Println("building baton-demo and tests/tfbaseline ...")
	for _, b := range []struct{ pkg, out, tags string }{
		{"./cmd/baton-demo", p.demo, ""},
		{"./tests/tfbaseline", p.base, ""},
		{"./tests/tfbaseline", p.min, "baton"},
	} {
		if err := demotest.Build(b.pkg, b.out, demotest.BuildOpts{Version: "bench", Tags: b.tags}); err != nil {
			return p, err
		}
	}
	return p, nil
}

// upgradeSpecs are the services -services picks from, by name.
func (p programs) upgradeSpecs(stateArgs string) map[string]serviceSpec {
	return map[string]serviceSpec{
		"baton":       {Name: "baton", Bin: p.demo, Args: p.demoArgs},
		"baton-nokv":  {Name: "baton-nokv", Bin: p.demo, Args: append(slices.Clone(p.demoArgs), "-kv-entries=0")},
		"baton-min":   {Name: "baton-min", Bin: p.min, Args: []string{"-server=baton"}},
		"tableflip":   {Name: "tableflip", Bin: p.base},
		"restart":     {Name: "restart", Bin: p.demo, Args: p.demoArgs, Restart: true},
		"baton-state": {Name: "baton-state", Bin: p.demo, Args: append(slices.Clone(p.demoArgs), strings.Fields(stateArgs)...)},
	}
}

// runConfig is what the flags ask of each service's run.
func (f flags) runConfig() runConfig {
	return runConfig{
		Load:       upgradertest.LoadConfig{Clients: f.clients, Fresh: f.fresh, Post: f.post, Rate: f.rate, MaxRequests: 5_000_000},
		Upgrades:   f.upgrades,
		Interval:   f.interval,
		Warmup:     f.warmup,
		Cooldown:   f.cooldown,
		Settle:     20 * time.Millisecond,
		StepLimit:  60 * time.Second,
		ProbeEvery: time.Millisecond,
		RSSEvery:   10 * time.Millisecond,
	}
}

// measureUpgrades upgrades each service of -services under load, then
// times the cold starts, and puts the runs, the ratios, the checks and the
// cold starts into res. It returns each run's data, for the plot.
func measureUpgrades(ctx context.Context, f flags, all map[string]serviceSpec, root string, res *results) ([]*runData, error) {
	cfg := f.runConfig()
	var data []*runData
	for _, name := range strings.Split(f.services, ",") {
		spec, ok := all[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("-services: unknown service %q", name)
		}
		fmt.Printf("%s: %d upgrades under load ...\n", spec.Name, f.upgrades)
		d, err := runService(ctx, spec, root, cfg)
		if err != nil {
			return nil, err
		}
		if d.err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, d.err)
		}
		data = append(data, d)
		res.Runs = append(res.Runs, summarize(d, f.margin))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	res.Ratios = computeRatios(res.Runs)
	res.Checks = checkTargets(res.Runs)
	cold, err := coldStarts(ctx, f.cold, all, root)
	if err != nil {
		return nil, err
	}
	res.Cold = cold
	return data, nil
}

// coldStarts times n cold starts of each binary; n <= 0 skips them.
func coldStarts(ctx context.Context, n int, all map[string]serviceSpec, root string) ([]coldStart, error) {
	if n <= 0 {
		return nil, nil
	}
	fmt.Printf("cold starts: %d per binary ...\n", n)
	var out []coldStart
	for _, name := range []string{"baton", "baton-nokv", "baton-min", "tableflip"} {
		c, err := measureColdStarts(ctx, all[name], root, n)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// measureOverhead serves the same handler through baton-demo, through the
// upgrader alone and on a plain http.Server, at saturation.
func measureOverhead(ctx context.Context, f flags, p programs, root string) (*overheadResult, error) {
	fmt.Printf("steady-state overhead: %d rounds of %v per variant, %d keep-alive clients ...\n",
		f.ohRounds, f.ohDur, f.ohClients)
	return runOverhead(ctx, []serviceSpec{
		{Name: "baton-demo", Bin: p.demo, Args: p.demoArgs},
		{Name: "baton-min", Bin: p.min, Args: []string{"-server=baton"}},
		{Name: "plain", Bin: p.base, Args: []string{"-server=plain"}},
	}, root, overheadConfig{Clients: f.ohClients, Duration: f.ohDur, Warmup: 500 * time.Millisecond,
		Rounds: f.ohRounds, MaxReqs: 50_000_000})
}

// writeResults prints the tables and writes table.txt, results.json and,
// if there are runs, upgrade-latency.png and upgrade-times.svg to dir.
func writeResults(dir string, res results, data []*runData) error {
	if err := writeReport(dir, "table.txt", formatTables(res), "results.json", res); err != nil {
		return err
	}
	if len(data) > 0 {
		if err := writePlot(filepath.Join(dir, "upgrade-latency.png"), data); err != nil {
			return err
		}
		if err := writeUpgradeTimes(filepath.Join(dir, "upgrade-times.svg"), res.Runs); err != nil {
			return err
		}
	}
	fmt.Printf("\nwrote %s\n", dir)
	return nil
}

// writeReport prints table and writes it to dir/textName, and v as
// indented JSON to dir/jsonName: every mode's table and results.
func writeReport(dir, textName, table, jsonName string, v any) error {
	fmt.Print("\n" + table)
	if err := os.WriteFile(filepath.Join(dir, textName), []byte(table), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, jsonName), append(b, '\n'), 0o644)
}

// stoppedEarly names the runs that stopped before their last upgrade.
func stoppedEarly(data []*runData) error {
	var failed []string
	for _, d := range data {
		if d.err != nil {
			failed = append(failed, d.spec.Name)
		}
	}
	if len(failed) > 0 {
		return errors.New("runs stopped early: " + strings.Join(failed, ", "))
	}
	return nil
}

// machine describes where the numbers were taken.
type machine struct {
	CPUs      int    `json:"nproc"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	LoadStart string `json:"loadavg_at_start"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadStart = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

func (m machine) String() string {
	return fmt.Sprintf("machine: %d CPUs, %s, Linux %s, %s, load average %s\n", m.CPUs, m.CPU, m.Kernel, m.Go, m.LoadStart)
}
