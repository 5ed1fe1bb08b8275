package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// tracker holds a pidfd for every process of one service: the ones the
// driver started and the generations they started. Signals go through the
// pidfds, so a pid that was reused by another program after ours exited is
// never signalled, and only processes running the service's own binary are
// tracked at all.
type tracker struct {
	exe string // absolute path of the service's binary

	mu    sync.Mutex
	procs map[int]*tracked
	order []int // pids in the order they were found
}

type tracked struct {
	proc  *pidfd.Process
	found time.Time
}

func newTracker(exe string) *tracker {
	return &tracker{exe: exe, procs: map[int]*tracked{}}
}

// add starts tracking pid if it runs the service's binary. It reports
// whether pid is tracked now.
func (t *tracker) add(pid int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.procs[pid]; ok {
		return true
	}
	p, err := pidfd.Open(pid)
	if err != nil {
		return false
	}
	// Checked after the pidfd is open: if the pid was reused before, the
	// check sees the other program; after, the pidfd refers to ours.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != t.exe {
		p.Close()
		return false
	}
	t.procs[pid] = &tracked{proc: p, found: time.Now()}
	t.order = append(t.order, pid)
	return true
}

// exited reports whether the tracked process pid has exited (or is not
// tracked).
func (t *tracker) exited(pid int) bool {
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	return !ok || p.proc.Exited()
}

// alive lists the tracked processes that have not exited.
func (t *tracker) alive() []int {
	t.mu.Lock()
	pids := append([]int(nil), t.order...)
	t.mu.Unlock()
	var out []int
	for _, pid := range pids {
		if !t.exited(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// all lists every pid tracked so far.
func (t *tracker) all() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]int(nil), t.order...)
}

// signal sends sig to a tracked process.
func (t *tracker) signal(pid int, sig syscall.Signal) error {
	p, err := t.get(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// waitExit waits until the tracked process pid has exited, or ctx is done.
func (t *tracker) waitExit(ctx context.Context, pid int) error {
	p, err := t.get(pid)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// get returns the pidfd of the tracked process pid.
func (t *tracker) get(pid int) (*pidfd.Process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[pid]
	if !ok {
		return nil, fmt.Errorf("pid %d is not one of the service's processes", pid)
	}
	return p.proc, nil
}

// discover tracks the children of every live tracked process, repeatedly,
// so that grandchildren are found too.
func (t *tracker) discover() {
	for range 8 {
		added := false
		for _, pid := range t.alive() {
			for _, c := range childrenOf(pid) {
				if !t.has(c) && t.add(c) {
					added = true
				}
			}
		}
		if !added {
			return
		}
	}
}

func (t *tracker) has(pid int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.procs[pid]
	return ok
}

// stop ends every tracked process still alive: SIGTERM, and SIGKILL for
// what is left after grace.
func (t *tracker) stop(grace time.Duration) {
	t.discover()
	for _, pid := range t.alive() {
		t.signal(pid, syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, pid := range t.alive() {
		if t.waitExit(ctx, pid) != nil {
			t.signal(pid, syscall.SIGKILL)
			kctx, kcancel := context.WithTimeout(context.Background(), 5*time.Second)
			t.waitExit(kctx, pid)
			kcancel()
		}
	}
}

// close releases the pidfds.
func (t *tracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.procs {
		p.proc.Close()
	}
	t.procs = map[int]*tracked{}
}

// childrenOf lists the children of pid: each thread has its own list.
func childrenOf(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// memory reads a process's resident set and its peak, in KiB.
func memory(pid int) (rss, hwm int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		switch k {
		case "VmRSS":
			rss, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		case "VmHWM":
			hwm, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	// A zombie has no memory lines.
	return rss, hwm, rss > 0
}

// The bench reads the log every process of a service writes to the pipe
// they share with the kit's log reader, upgradertest.Logs.

// Messages the services under test log (baton-demo and tests/tfbaseline
// alike).
const (
	msgServing = "serving"
	msgFailed  = "upgrade failed: still serving"
	// msgRestored is baton's line in a new process: the snapshot's size
	// and how long the state phase took as the new process saw it (from
	// asking for the state to having restored it).
	msgRestored = "state restored"
)

// waitServing waits for pid's msg=serving line and returns its address.
func waitServing(l *upgradertest.Logs, pid int, timeout time.Duration) (string, error) {
	line, err := l.Wait(timeout, upgradertest.Match{Msg: msgServing, Pid: pid})
	if err != nil {
		return "", fmt.Errorf("pid %d: not serving: %w", pid, err)
	}
	return line.Fields["addr"], nil
}

// waitFailure waits until pid logs a failed upgrade at log index from or
// later, and returns its error, or nil when ctx is done or the log ends.
func waitFailure(ctx context.Context, l *upgradertest.Logs, pid, from int) error {
	line, err := l.WaitContext(ctx, from, upgradertest.Match{Msg: msgFailed, Pid: pid})
	if err != nil {
		return nil
	}
	return fmt.Errorf("pid %d logged a failed upgrade: %s", pid, line.Fields["err"])
}

// stateRestored returns the snapshot size and the state phase's length
// that the new process pid logged, if it did.
func stateRestored(l *upgradertest.Logs, pid int) (bytes int64, took time.Duration, ok bool) {
	var line upgradertest.Line
	for _, x := range l.Lines(0) {
		if x.Pid == pid && x.Msg == msgRestored {
			line, ok = x, true
		}
	}
	if !ok {
		return 0, 0, false
	}
	bytes, err1 := strconv.ParseInt(line.Fields["bytes"], 10, 64)
	took, err2 := time.ParseDuration(line.Fields["took"])
	return bytes, took, err1 == nil && err2 == nil
}
