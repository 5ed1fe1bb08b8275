package main

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// coldStart is how long a binary takes from exec to its first reply, with
// no upgrade involved: the part of "trigger -> new pid serving" that is the
// program's own start (runtime, package init, flags, listening) rather
// than the upgrade protocol.
type coldStart struct {
	Service    string    `json:"service"`
	Args       []string  `json:"args,omitempty"`
	Starts     int       `json:"starts"`
	FirstReply timeStats `json:"exec_to_first_reply"`
}

// measureColdStarts starts spec n times on one port, each after the
// previous process exited, and times exec to the first reply to GET /.
func measureColdStarts(ctx context.Context, spec serviceSpec, root string, n int) (coldStart, error) {
	res := coldStart{Service: spec.Name, Args: spec.Args}
	s, err := startService(spec, root)
	if err != nil {
		return res, err
	}
	defer s.stop()
	known := map[int]bool{}
	cur := s.tr.all()[0]
	var times []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		known[cur] = true
		if err := s.stopOne(ctx, cur); err != nil {
			return res, err
		}
		t0 := time.Now()
		pid, err := s.spawn(s.addr)
		if err != nil {
			return res, err
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		got, at, err := probeNew(pctx, s.url(), known, time.Millisecond)
		cancel()
		if err != nil {
			return res, fmt.Errorf("cold start of %s: %w\n%s", spec.Name, err, s.logs.Tail(10))
		}
		if got != pid {
			return res, fmt.Errorf("cold start of %s: pid %d answered, %d was started", spec.Name, got, pid)
		}
		times = append(times, at.Sub(t0))
		cur = pid
	}
	res.Starts = len(times)
	res.FirstReply = timeSummary(times)
	return res, nil
}

// stopOne stops one process of the service and waits for its exit.
func (s *service) stopOne(ctx context.Context, pid int) error {
	if err := s.tr.signal(pid, syscall.SIGTERM); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.tr.waitExit(ctx, pid)
}
