package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
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
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("pid %d is not one of the service's processes", pid)
	}
	return p.proc.Signal(sig)
}

// waitExit waits until the tracked process pid has exited, or ctx is done.
func (t *tracker) waitExit(ctx context.Context, pid int) error {
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("pid %d is not tracked", pid)
	}
	return p.proc.Wait(ctx)
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

// logLine is a line of slog's text format.
type logLine struct {
	raw    string
	msg    string
	pid    int
	fields map[string]string // the first value of each key
}

var logFieldRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

func parseLogLine(s string) logLine {
	l := logLine{raw: s, fields: map[string]string{}}
	for _, m := range logFieldRE.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
		}
		if _, dup := l.fields[m[1]]; !dup {
			l.fields[m[1]] = v
		}
	}
	l.msg = l.fields["msg"]
	l.pid, _ = strconv.Atoi(l.fields["pid"])
	return l
}

// logs reads the lines every process of a service writes to the pipe they
// share, and keeps the last ones for error messages.
type logs struct {
	mu      sync.Mutex
	serving map[int]string // pid -> addr, from msg=serving
	// failed holds the errors of the failed upgrades each pid logged.
	failed map[int][]string
	// restored holds baton's "state restored" line of each new process:
	// the snapshot's size and how long the state phase took as the new
	// process saw it (from asking for the state to having restored it).
	restored map[int]logLine
	tail     []string
	changed  chan struct{} // closed and replaced on every line
	done     chan struct{} // closed when the pipe ended
}

func readLogs(r io.ReadCloser) *logs {
	l := &logs{serving: map[int]string{}, failed: map[int][]string{}, restored: map[int]logLine{}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := parseLogLine(sc.Text())
			l.mu.Lock()
			switch {
			case line.pid == 0:
			case line.msg == "serving":
				l.serving[line.pid] = line.fields["addr"]
			case line.msg == "upgrade failed: still serving":
				// Both baton-demo and tfbaseline log this.
				l.failed[line.pid] = append(l.failed[line.pid], line.fields["err"])
			case line.msg == "state restored":
				l.restored[line.pid] = line
			}
			l.tail = append(l.tail, line.raw)
			if len(l.tail) > 200 {
				l.tail = l.tail[len(l.tail)-100:]
			}
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// waitServing waits for pid's msg=serving line and returns its address.
func (l *logs) waitServing(pid int, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		addr, ok := l.serving[pid]
		changed := l.changed
		l.mu.Unlock()
		if ok {
			return addr, nil
		}
		select {
		case <-changed:
		case <-l.done:
			return "", fmt.Errorf("pid %d: log ended before it served", pid)
		case <-deadline.C:
			return "", fmt.Errorf("pid %d: not serving after %v", pid, timeout)
		}
	}
}

// failures returns the errors of the failed upgrades pid logged.
func (l *logs) failures(pid int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.failed[pid]...)
}

// waitFailure waits until pid has logged more than seen failed upgrades,
// and returns the last one's error, or nil when ctx is done.
func (l *logs) waitFailure(ctx context.Context, pid, seen int) error {
	for {
		l.mu.Lock()
		f, changed := l.failed[pid], l.changed
		l.mu.Unlock()
		if len(f) > seen {
			return fmt.Errorf("pid %d logged a failed upgrade: %s", pid, f[len(f)-1])
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.done:
			return nil
		case <-changed:
		}
	}
}

// stateRestored returns the snapshot size and the state phase's length
// that the new process pid logged, if it did.
func (l *logs) stateRestored(pid int) (bytes int64, took time.Duration, ok bool) {
	l.mu.Lock()
	line, ok := l.restored[pid]
	l.mu.Unlock()
	if !ok {
		return 0, 0, false
	}
	bytes, err1 := strconv.ParseInt(line.fields["bytes"], 10, 64)
	took, err2 := time.ParseDuration(line.fields["took"])
	return bytes, took, err1 == nil && err2 == nil
}

// last returns the last n lines.
func (l *logs) last(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail[max(0, len(l.tail)-n):], "\n")
}
