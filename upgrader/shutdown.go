package upgrader

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// Shutdown stops the process gracefully: it closes every listener first, so
// that no connection is accepted that would not be served, then drains the
// HTTP servers and runs the OnShutdown hooks until they finish or ctx is
// done. A ctx without a deadline gets Options.DrainTimeout. Connections still
// open at the deadline are closed, logged and counted, and Shutdown returns
// ctx.Err(). After a successful upgrade the listeners live on in the new
// process; otherwise Unix socket files are removed.
//
// A stop during a probation (Options.Probation) in the old process ends the
// upgrade as a stop during any upgrade does: the new process is killed and
// this one drains and writes the state file. A new process stopped while on
// probation writes no state file: its previous generation still owns the
// state (and takes the service back).
//
// A stop that is not an upgrade then writes Options.StateFile, whatever the
// drain did: freezing has its own Options.StateFileTimeout. If the file
// cannot be written the error wraps ErrStateFile (joined with ctx.Err() if
// the drain ran out too), and the process should exit with a failure.
func (u *Upgrader) Shutdown(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.opts.DrainTimeout)
		defer cancel()
	}
	start := time.Now()
	closers, servers, hooks, first := u.markClosed()
	if !first {
		return nil
	}
	if !u.isUpgraded() {
		u.abandonUpgrade(ctx)
	}
	if u.isUpgraded() {
		u.emit(Event{Step: StepDraining})
	} else {
		u.emit(Event{Step: StepStopping})
	}
	// Replies say "Connection: close" from now on, then the listeners
	// close: nothing is accepted that would not be served.
	for _, s := range servers {
		s.draining.Store(true)
	}
	for _, c := range closers {
		c.Close()
	}
	u.log.Info("draining", "servers", len(servers), "hooks", len(hooks))
	if u.isUpgraded() {
		fault(faultOldKillMidDrain, u.gen, u.attemptNow())
	}

	forced, errs := u.drainAll(ctx, servers, hooks)
	close(u.drained)
	d := time.Since(start)
	u.counters.Counter(counterDrainForced).Add(uint64(forced))
	if u.metrics != nil && !u.isUpgraded() {
		// After an upgrade the new process observes it (sendFinal): it
		// is the one scraped now.
		u.metrics.drainDuration.Observe(d.Seconds())
	}
	var stateErr error
	if u.isUpgraded() {
		u.sendFinal(d)
	} else if u.isOnProbation() {
		// A new process stopped on probation: the previous generation
		// owns the state, and takes the service back.
		u.log.Warn("stopped on probation: the state file is the previous generation's to write")
	} else if stateErr = u.writeFinalStateFile(ctx); stateErr != nil {
		u.log.Error("state file not written", "path", u.opts.StateFile, "err", stateErr)
		errs = append(errs, stateErr)
	}
	u.release()

	u.log.Info("drained", "duration", d, "forced_connections", forced)
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), stateErr)
	}
	return errors.Join(errs...)
}

// drainAll drains every server and runs every OnShutdown hook, all at
// once, until they finish or ctx is done. It returns how many connections
// were closed at the deadline, and the drains' and hooks' errors.
func (u *Upgrader) drainAll(ctx context.Context, servers []*httpServer, hooks []func(context.Context) error) (forced int, errs []error) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, s := range servers {
		wg.Go(func() {
			f, err := u.drainServer(ctx, s)
			mu.Lock()
			defer mu.Unlock()
			forced += f
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	for _, h := range hooks {
		wg.Go(func() {
			if err := h(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return forced, errs
}

// drainServer drains s and logs what the drain had to close.
func (u *Upgrader) drainServer(ctx context.Context, s *httpServer) (forced int, err error) {
	forced, active, quiet, err := s.drain(ctx)
	if quiet > 0 {
		u.log.Info("closed quiet idle connections", "addr", s.ln.Addr().String(), "connections", quiet)
	}
	if err != nil {
		u.log.Warn("drain deadline reached: closed connections", "addr", s.ln.Addr().String(),
			"connections", forced, "with_request_in_flight", active)
	}
	return forced, err
}

// abandonUpgrade ends an upgrade still in progress when the process stops
// without having handed over: tableflip kills the new process, and the
// upgrade thaws the participants before it returns. Without this the stop
// would try to freeze participants the upgrade holds frozen (the state file
// would not be written), and they would thaw after the stop had captured
// them; the new process, holding copies of the listeners but accepting
// nothing, would also outlive the drain. Once the upgrade has ended no other
// can start: markClosed refuses them.
func (u *Upgrader) abandonUpgrade(ctx context.Context) {
	u.mu.Lock()
	upgrading, done := u.upgrading, u.upgradeDone
	u.mu.Unlock()
	if !upgrading {
		return
	}
	u.log.Warn("stopping during an upgrade: abandoning it")
	u.tf.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Close stops the process at once: listeners and connections are closed
// without draining. It is idempotent and safe after Shutdown.
func (u *Upgrader) Close() error {
	closers, servers, _, first := u.markClosed()
	if !first {
		return nil
	}
	for _, c := range closers {
		c.Close()
	}
	for _, s := range servers {
		s.srv.Close()
	}
	u.release()
	return nil
}

func (u *Upgrader) markClosed() ([]io.Closer, []*httpServer, []func(context.Context) error, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, nil, nil, false
	}
	u.closed = true
	close(u.stopPeriod)
	return u.closers, u.servers, u.hooks, true
}

func (u *Upgrader) isUpgraded() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.upgraded
}

// release stops tableflip, removes the pid file if it still names this
// process, and joins every goroutine the Upgrader started.
func (u *Upgrader) release() {
	u.tf.Stop()
	u.releaseUnixSockets(u.isUpgraded())
	u.discardPIDFile()
	u.removePIDFile()
	if u.own.UnixConn != nil {
		// Read what the new process sent and no session read (its
		// "restored" may arrive after tableflip's ready byte ended the
		// session): a Unix socket closed with unread data resets its
		// peer, which then loses what is queued for it, such as the
		// final counts.
		u.own.discardQueued()
		u.own.Close()
	}
	if u.parent.UnixConn != nil {
		u.parent.Close()
	}
	if u.stopWatch != nil {
		u.stopWatch()
	}
	u.wg.Wait()
}

// OnShutdown registers a drain hook for a server that is not an
// *http.Server. Shutdown calls it with its context after the listeners are
// closed; it should finish the work in flight and return, or return
// ctx.Err() at the deadline.
func (u *Upgrader) OnShutdown(f func(ctx context.Context) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hooks = append(u.hooks, f)
}
