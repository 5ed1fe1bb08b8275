package main

import (
	"context"
	"fmt"
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
	return d, nil
}

// upgrade triggers one upgrade of the process old and waits until a new
// process answered and old exited.
func (s *service) upgrade(ctx context.Context, old int, known map[int]bool, cfg runConfig) (upgradeEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.StepLimit)
	defer cancel()
	ev := upgradeEvent{OldPid: old}

	type probed struct {
		pid int
		at  time.Time
		err error
	}
	probe := make(chan probed, 1)
	forked := make(chan probed, 1)
	sig := syscall.SIGHUP
	if s.spec.Restart {
		sig = syscall.SIGTERM
	}
	// A failed upgrade leaves the old process serving: it shows only in
	// its log, and everything waiting here stops on it.
	failedFrom := s.logs.Len()
	var failed error
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	go func() {
		defer close(watched)
		if failed = waitFailure(ctx, s.logs, old, failedFrom); failed != nil {
			cancel()
		}
	}()
	ev.trigger = time.Now()
	if err := s.tr.signal(old, sig); err != nil {
		return ev, fmt.Errorf("signal %d: %w", old, err)
	}
	go func() {
		pid, at, err := probeNew(ctx, s.url(), known, cfg.ProbeEvery)
		probe <- probed{pid, at, err}
	}()
	if !s.spec.Restart {
		go func() {
			pid, at, err := s.watchFork(ctx, old)
			forked <- probed{pid, at, err}
		}()
	}

	var (
		fork probed
		err  error
	)
	if s.spec.Restart {
		err = s.tr.waitExit(ctx, old)
		ev.gone = time.Now()
		if err == nil {
			// The new process starts once the old one is gone: no
			// overlap.
			fork.at = time.Now()
			fork.pid, fork.err = s.spawn(s.addr)
		}
	} else {
		// The fork first: a failed upgrade shows there, and then the old
		// process does not exit.
		if fork = <-forked; fork.err == nil {
			err = s.tr.waitExit(ctx, old)
			ev.gone = time.Now()
		}
	}
	if err != nil || fork.err != nil {
		cancel() // ends the probe
	}
	p := <-probe
	cancel()
	<-watched
	switch {
	case failed != nil:
		return ev, failed
	case err != nil:
		return ev, fmt.Errorf("old process: %w", err)
	case fork.err != nil:
		return ev, fmt.Errorf("new process: %w", fork.err)
	case p.err != nil:
		return ev, p.err
	case p.pid != fork.pid:
		return ev, fmt.Errorf("new pid %d answered, but the process started was %d", p.pid, fork.pid)
	}
	ev.NewPid = p.pid
	ev.Serving = p.at.Sub(ev.trigger)
	ev.Gone = ev.gone.Sub(ev.trigger)
	ev.Overlap = max(0, ev.gone.Sub(fork.at))
	return ev, nil
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
			return 0, time.Time{}, fmt.Errorf("pid %d exited and no child of it was seen", old)
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, fmt.Errorf("no new process forked: %w", ctx.Err())
		case <-tick.C:
		}
	}
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
