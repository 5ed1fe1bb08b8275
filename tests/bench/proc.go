package main

import (
	"bufio"
	"errors"
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

	"golang.org/x/sys/unix"
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
	pid   int
	fd    int
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
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	// Checked after the pidfd is open: if the pid was reused before, the
	// check sees the other program; after, the pidfd refers to ours.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != t.exe {
		unix.Close(fd)
		return false
	}
	t.procs[pid] = &tracked{pid: pid, fd: fd, found: time.Now()}
	t.order = append(t.order, pid)
	return true
}

// exited reports whether the tracked process pid has exited (or is not
// tracked).
func (t *tracker) exited(pid int) bool {
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	if !ok {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
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
	return unix.PidfdSendSignal(p.fd, sig, nil, 0)
}

// waitExit waits until the tracked process pid has exited.
func (t *tracker) waitExit(pid int, timeout time.Duration) error {
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("pid %d is not tracked", pid)
	}
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			return fmt.Errorf("pid %d still running after %v", pid, timeout)
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
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
	deadline := time.Now().Add(grace)
	for _, pid := range t.alive() {
		if t.waitExit(pid, max(time.Until(deadline), time.Millisecond)) != nil {
			t.signal(pid, syscall.SIGKILL)
			t.waitExit(pid, 5*time.Second)
		}
	}
}

// close releases the pidfds.
func (t *tracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.procs {
		unix.Close(p.fd)
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

// logLine is a line of slog's text format, with the fields the driver reads.
type logLine struct {
	raw  string
	msg  string
	pid  int
	addr string
}

var logFieldRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

func parseLogLine(s string) logLine {
	l := logLine{raw: s}
	for _, m := range logFieldRE.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
		}
		switch m[1] {
		case "msg":
			l.msg = v
		case "pid":
			if l.pid == 0 {
				l.pid, _ = strconv.Atoi(v)
			}
		case "addr":
			l.addr = v
		}
	}
	return l
}

// logs reads the lines every process of a service writes to the pipe they
// share, and keeps the last ones for error messages.
type logs struct {
	mu      sync.Mutex
	serving map[int]string // pid -> addr, from msg=serving
	tail    []string
	changed chan struct{} // closed and replaced on every line
	done    chan struct{} // closed when the pipe ended
}

func readLogs(r io.ReadCloser) *logs {
	l := &logs{serving: map[int]string{}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := parseLogLine(sc.Text())
			l.mu.Lock()
			if line.msg == "serving" && line.pid > 0 {
				l.serving[line.pid] = line.addr
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

// last returns the last n lines.
func (l *logs) last(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail[max(0, len(l.tail)-n):], "\n")
}
