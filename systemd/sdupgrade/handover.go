package sdupgrade

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/upgrader"
)

// handle runs on the goroutine that emits the event. Each handler is short;
// the longest, at child-ready, waits for systemd (bounded by the timeout)
// before Upgrade returns, which is the point: the old process must not exit
// before MAINPID= has taken effect.
func (i *Integration) handle(e upgrader.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return
	}
	switch e.Step {
	case upgrader.StepReady:
		i.readyLocked()
	case upgrader.StepStarted:
		i.startedLocked()
	case upgrader.StepChildReady:
		i.childReadyLocked(e.Pid)
	case upgrader.StepFailed:
		i.failedLocked(e.Error)
	case upgrader.StepStopping:
		i.stoppingLocked()
	case upgrader.StepDraining:
		if i.n.Enabled() {
			i.log.Info("systemd: draining after the handover; this process no longer speaks for the service")
		}
	}
}

func (i *Integration) readyLocked() {
	if i.role != roleStarting {
		return
	}
	switch {
	case !i.hasParent || !i.n.Enabled():
		i.becomeMainLocked(nil)
	case i.handoverR != nil:
		r := i.handoverR
		i.handoverR, i.waiting = nil, r
		// Set here, under mu, so that Close's deadline in the past
		// cannot be overwritten by this one.
		r.SetReadDeadline(time.Now().Add(2 * i.timeout))
		i.wg.Add(1)
		go i.awaitHandover(r)
	default:
		// The previous generation runs without this integration (an
		// older binary): nobody will send MAINPID=<this process>.
		i.log.Warn("systemd: no handover from the previous generation; claiming MAINPID= " +
			"(systemd accepts it from this process only with NotifyAccess=all)")
		i.becomeMainLocked([]string{systemd.MainPID(i.pid)})
	}
}

// awaitHandover waits, in a new generation, for the old process's word that
// systemd has taken in MAINPID=<this process>, and then reports ready.
func (i *Integration) awaitHandover(r *os.File) {
	defer i.wg.Done()
	defer r.Close()
	var b [1]byte
	n, err := r.Read(b[:])

	i.mu.Lock()
	defer i.mu.Unlock()
	i.waiting = nil
	if i.closed {
		return
	}
	if n == 1 && b[0] == handoverDone {
		i.becomeMainLocked(nil)
		return
	}
	i.log.Warn("systemd: the previous generation did not confirm the handover; claiming MAINPID= "+
		"(systemd accepts it from this process only with NotifyAccess=all)", "err", err)
	i.becomeMainLocked([]string{systemd.MainPID(i.pid)})
}

func (i *Integration) becomeMainLocked(extra []string) {
	if i.role != roleStarting {
		return
	}
	status := fmt.Sprintf("serving (generation %d, pid %d)", i.gen, i.pid)
	sent, err := i.n.Notify(append(extra, systemd.NotifyReady, systemd.Status(status))...)
	if err != nil {
		i.log.Error("systemd: READY=1 not sent", "err", err)
	}
	i.role = roleMain
	close(i.mainC)
	if sent {
		i.log.Info("systemd: ready, main process of the service", "generation", i.gen)
	}
	if i.fdStore {
		i.storeListenersLocked()
	}
}

func (i *Integration) startedLocked() {
	if i.role != roleMain || !i.n.Enabled() {
		return
	}
	if i.handoverW != nil { // an earlier attempt's
		i.handoverW.Close()
		i.handoverW = nil
	}
	// The pipe rides along with the listeners: AddFile before the upgrader
	// starts the new process, which "started" precedes.
	r, w, err := os.Pipe()
	if err == nil {
		err = i.u.AddFile(handoverFileName, r)
		r.Close()
		if err != nil {
			w.Close()
		} else {
			i.handoverW = w
		}
	}
	if err != nil {
		i.log.Warn("systemd: no handover pipe for the new process; it will claim MAINPID= itself", "err", err)
	}
	lines := []string{systemd.NotifyReloading}
	if ts, err := systemd.MonotonicUSec(); err == nil {
		lines = append(lines, ts)
	}
	if _, err := i.n.Notify(append(lines, systemd.Status("upgrading: starting the new process"))...); err != nil {
		i.log.Warn("systemd: RELOADING=1 not sent", "err", err)
	}
}

func (i *Integration) childReadyLocked(pid int) {
	w := i.handoverW
	i.handoverW = nil
	if w != nil {
		defer w.Close()
	}
	if i.role != roleMain {
		return
	}
	i.role = roleHandedOver
	i.stopPingingLocked()
	if !i.n.Enabled() {
		return
	}
	if _, err := i.n.Notify(systemd.MainPID(pid), systemd.Status(fmt.Sprintf("handing over to pid %d", pid))); err != nil {
		// The new process falls back to claiming MAINPID= itself.
		i.log.Error("systemd: MAINPID= not sent", "new_pid", pid, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), i.timeout)
	defer cancel()
	if _, err := i.n.Barrier(ctx); err != nil {
		i.log.Warn("systemd: no barrier after MAINPID=; handing over anyway", "new_pid", pid, "err", err)
	}
	if w != nil {
		if _, err := w.Write([]byte{handoverDone}); err != nil {
			i.log.Warn("systemd: could not tell the new process it is the main one", "new_pid", pid, "err", err)
		}
	}
	i.log.Info("systemd: handed the main PID over", "new_pid", pid)
}

func (i *Integration) failedLocked(reason string) {
	if i.handoverW != nil {
		i.handoverW.Close()
		i.handoverW = nil
	}
	if i.role != roleMain {
		return
	}
	// READY=1 ends a reload announced by RELOADING=1 (or by the signal of
	// Type=notify-reload) with this process still the main one.
	if _, err := i.n.Notify(systemd.NotifyReady, systemd.Status(oneLine("upgrade failed: "+reason))); err != nil {
		i.log.Warn("systemd: READY=1 after the failed upgrade not sent", "err", err)
	}
}

func (i *Integration) stoppingLocked() {
	if i.role != roleMain {
		return
	}
	i.role = roleStopping
	// A ping after STOPPING=1 would re-arm the watchdog systemd stops
	// when the unit leaves the running state, and abort a long drain.
	i.stopPingingLocked()
	if _, err := i.n.Notify(systemd.NotifyStopping, systemd.Status("stopping: draining connections")); err != nil {
		i.log.Warn("systemd: STOPPING=1 not sent", "err", err)
	}
}

// stopPingingLocked ends every RunWatchdog and waits for the ping in flight.
// RunWatchdog checks gone under mu before it counts itself in, so none
// starts after this.
func (i *Integration) stopPingingLocked() {
	i.goneCancel()
	i.pinging.Wait()
}

// oneLine makes s a valid STATUS= value: error texts joined with
// errors.Join span lines, and systemd drops a message longer than
// systemd.MaxMessageBytes.
func oneLine(s string) string {
	s = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\x00", "").Replace(s)
	if max := systemd.MaxMessageBytes - 512; len(s) > max {
		// systemd ignores a STATUS= that is not valid UTF-8
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}
