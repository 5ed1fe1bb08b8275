package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// runConfig is what one service's run does.
type runConfig struct {
	Load       upgradertest.LoadConfig
	Upgrades   int
	Interval   time.Duration // between triggers, at least
	Warmup     time.Duration // load before the first trigger
	Cooldown   time.Duration // load after the last upgrade
	Settle     time.Duration // least time from an old process's exit to the next trigger
	StepLimit  time.Duration // bound on one upgrade
	ProbeEvery time.Duration
	RSSEvery   time.Duration
}

// upgradeEvent is one upgrade as the driver saw it.
type upgradeEvent struct {
	trigger time.Time
	gone    time.Time
	// At is the trigger's time since the load started.
	At     time.Duration
	OldPid int
	NewPid int
	// Serving is the time from the trigger to the first reply from NewPid.
	Serving time.Duration
	// Gone is the time from the trigger to OldPid's exit.
	Gone time.Duration
	// Overlap is the time both processes were alive: from the new
	// process's fork, seen by polling, to the old one's exit. Zero for a
	// plain restart, where the new process starts after the old one exited.
	Overlap time.Duration
	// StateBytes and StatePhase are what baton's new process logged: the
	// snapshot's size and the time from asking for the state to having
	// restored it. Zero for the others.
	StateBytes int64
	StatePhase time.Duration
}

// rssSample is the memory of a service's processes at one moment.
type rssSample struct {
	At    time.Duration // since the load started
	RSS   int64         // KiB, summed over the live processes
	Procs int
}

// runData is everything measured in one service's run.
type runData struct {
	spec      serviceSpec
	loadStart time.Time
	report    *upgradertest.LoadReport
	events    []upgradeEvent
	rss       []rssSample
	// hwm is the highest VmHWM of any one process, KiB.
	hwm int64
	// pauses is the work pause of each upgrade, from the logs (scale.go).
	pauses []time.Duration
	// err is what stopped the run early, if anything.
	err error
}

// runService starts spec, puts the load on it, upgrades it cfg.Upgrades
// times and stops it.
func runService(ctx context.Context, spec serviceSpec, root string, cfg runConfig) (*runData, error) {
	s, err := startService(spec, root)
	if err != nil {
		return nil, err
	}
	cur := s.tr.all()[0]
	d := &runData{spec: spec}

	samplerCtx, stopSampler := context.WithCancel(ctx)
	sampled := make(chan struct{})
	lcfg := cfg.Load
	lcfg.URL = s.url()
	lcfg.Latencies = true
	loadCtx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan *upgradertest.LoadReport, 1)
	d.loadStart = time.Now()
	go func() {
		defer close(sampled)
		d.rss, d.hwm = sampleRSS(samplerCtx, s.tr, d.loadStart, cfg.RSSEvery)
	}()
	go func() { loaded <- upgradertest.RunLoad(loadCtx, lcfg) }()

	pause(ctx, cfg.Warmup)
	known := map[int]bool{cur: true}
	next := time.Now()
	for i := 0; i < cfg.Upgrades && ctx.Err() == nil; i++ {
		pause(ctx, time.Until(next))
		ev, err := s.upgrade(ctx, cur, known, cfg)
		// The next trigger waits for the interval and, after a slow
		// upgrade, a moment more: tableflip's new process learns that its
		// parent exited from a pipe, a little after the exit, and refuses
		// to upgrade before (baton waits for it).
		next = later(ev.trigger.Add(cfg.Interval), ev.gone.Add(cfg.Settle))
		if err != nil {
			d.err = fmt.Errorf("upgrade %d of %s: %w\n%s", i+1, spec.Name, err, s.logs.Tail(20))
			break
		}
		ev.At = ev.trigger.Sub(d.loadStart)
		d.events = append(d.events, ev)
		known[ev.NewPid] = true
		cur = ev.NewPid
	}
	pause(ctx, cfg.Cooldown)
	stopLoad()
	d.report = <-loaded
	stopSampler()
	<-sampled
	if err := s.stop(); err != nil && d.err == nil {
		d.err = err
	}
	// Read once every process is gone and its log fully read.
	for i, e := range d.events {
		if n, took, ok := stateRestored(s.logs, e.NewPid); ok {
			d.events[i].StateBytes, d.events[i].StatePhase = n, took
		}
	}
	d.pauses = workPauses(s.logs, d.events)
	return d, nil
}

// probed is a new process as one of the waits below saw it: its pid and
// when it was seen.
type probed struct {
	pid int
	at  time.Time
	err error
}

// upgrade triggers one upgrade of the process old and waits until a new
// process answered and old exited.
func (s *service) upgrade(ctx context.Context, old int, known map[int]bool, cfg runConfig) (upgradeEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.StepLimit)
	defer cancel()
	ev := upgradeEvent{OldPid: old}

	// A failed upgrade leaves the old process serving: it shows only in
	// its log, and everything waiting here stops on it.
	failed := s.watchFailure(ctx, cancel, old)
	defer func() { cancel(); <-failed.done }()
	ev.trigger = time.Now()
	if err := s.tr.signal(old, s.triggerSignal()); err != nil {
		return ev, fmt.Errorf("signal %d: %w", old, err)
	}
	probe := make(chan probed, 1)
	go func() {
		pid, at, err := probeNew(ctx, s.url(), known, cfg.ProbeEvery)
		probe <- probed{pid, at, err}
	}()

	fork, gone, err := s.handover(ctx, old)
	ev.gone = gone
	if err != nil || fork.err != nil {
		cancel() // ends the probe
	}
	p := <-probe
	cancel()
	<-failed.done
	if p.err == nil && fork.err == nil && p.pid != fork.pid && s.tr.exited(fork.pid) && s.tr.add(p.pid) {
		// The child seen was another, short-lived one of the old
		// process running its binary (a fork that exited without an
		// exec; seen once: pid N+1 taken for the new process N), and
		// the process that answered is the new one.
		fork.pid = p.pid
	}
	if err := upgradeOutcome(failed.err, err, fork, p); err != nil {
		return ev, err
	}
	ev.NewPid = p.pid
	ev.Serving = p.at.Sub(ev.trigger)
	ev.Gone = ev.gone.Sub(ev.trigger)
	if fork.at.IsZero() {
		fork.at = ev.trigger // the fork was not seen (watchFork)
	}
	ev.Overlap = max(0, ev.gone.Sub(fork.at))
	return ev, nil
}

// triggerSignal is what starts an upgrade of the service: SIGHUP, or
// SIGTERM for a plain restart.
func (s *service) triggerSignal() syscall.Signal {
	if s.spec.Restart {
		return syscall.SIGTERM
	}
	return syscall.SIGHUP
}

// failureWatch waits for the log line of a failed upgrade; err is set once
// done is closed.
type failureWatch struct {
	done chan struct{}
	err  error
}

// watchFailure watches the log, from now on, for old's failed upgrade and
// calls cancel if it sees one, so that every wait of the upgrade stops.
func (s *service) watchFailure(ctx context.Context, cancel context.CancelFunc, old int) *failureWatch {
	w := &failureWatch{done: make(chan struct{})}
	from := s.logs.Len()
	go func() {
		defer close(w.done)
		if w.err = waitFailure(ctx, s.logs, old, from); w.err != nil {
			cancel()
		}
	}()
	return w
}

// handover waits, after the trigger, until the new process has started and
// the old one has exited, in the order the kind of upgrade has them, and
// returns the new process and when the old one was gone.
func (s *service) handover(ctx context.Context, old int) (fork probed, gone time.Time, err error) {
	if s.spec.Restart {
		err = s.tr.waitExit(ctx, old)
		gone = time.Now()
		if err == nil {
			// The new process starts once the old one is gone: no
			// overlap.
			fork.at = time.Now()
			fork.pid, fork.err = s.spawn(s.addr)
		}
		return fork, gone, err
	}
	// The fork first: a failed upgrade shows there, and then the old
	// process does not exit.
	if fork.pid, fork.at, fork.err = s.watchFork(ctx, old); fork.err == nil {
		err = s.tr.waitExit(ctx, old)
		gone = time.Now()
	}
	return fork, gone, err
}

// upgradeOutcome is the first reason the upgrade failed, in the order that
// explains it best, or nil: the failure old logged, old's wait, the new
// process's start, the probe, and a reply from another process than the
// one started.
func upgradeOutcome(failed, oldErr error, fork, p probed) error {
	switch {
	case failed != nil:
		return failed
	case oldErr != nil:
		return fmt.Errorf("old process: %w", oldErr)
	case fork.err != nil:
		return fmt.Errorf("new process: %w", fork.err)
	case p.err != nil:
		return p.err
	case p.pid != fork.pid:
		return fmt.Errorf("new pid %d answered, but the process started was %d", p.pid, fork.pid)
	}
	return nil
}

// watchFork polls old's children until one runs the service's binary, and
// tracks it.
func (s *service) watchFork(ctx context.Context, old int) (int, time.Time, error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		for _, c := range childrenOf(old) {
			if s.tr.add(c) {
				return c, time.Now(), nil
			}
		}
		if s.tr.exited(old) {
			// Under saturation (the tool mode) the driver can miss a
			// whole fast upgrade between two polls: the child forked,
			// got ready and its parent exited, and the child is no
			// longer old's. Its pid file names it; the fork time is
			// then unknown and the overlap counts from the trigger.
			if pid, ok := s.pidFromFile(old); ok {
				return pid, time.Time{}, nil
			}
			return 0, time.Time{}, fmt.Errorf("pid %d exited and no child of it was seen", old)
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, fmt.Errorf("no new process forked: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// pidFromFile is the pid in the service's pid file if it is another
// process than old running the service's binary, now tracked.
func (s *service) pidFromFile(old int) (int, bool) {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == old || !s.tr.add(pid) {
		return 0, false
	}
	return pid, true
}

// sampleRSS reads the memory of the service's live processes every
// interval until ctx is done.
func sampleRSS(ctx context.Context, tr *tracker, start time.Time, every time.Duration) ([]rssSample, int64) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var (
		out []rssSample
		hwm int64
	)
	for {
		s := rssSample{At: time.Since(start)}
		for _, pid := range tr.alive() {
			rss, h, ok := memory(pid)
			if !ok {
				continue
			}
			s.RSS += rss
			s.Procs++
			hwm = max(hwm, h)
		}
		out = append(out, s)
		select {
		case <-ctx.Done():
			return out, hwm
		case <-tick.C:
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pause waits for d or until ctx is done. It paces the load and the
// triggers; nothing waits on it for an outcome.
func pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
