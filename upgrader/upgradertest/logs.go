package upgradertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Line is one line a service wrote, parsed as log/slog's text format
// (key=value pairs, values quoted where they need it). A line that is not a
// log line, such as a process's last words on stderr, has no Msg.
type Line struct {
	Raw string
	Msg string // the msg field
	Pid int    // the pid field, 0 without one
	// Fields holds the first value of each key: a later repeat of a key
	// (slog's With and a call's own attribute) does not replace it.
	Fields map[string]string
}

var fieldRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// ParseLine parses one line of slog's text format.
func ParseLine(s string) Line {
	l := Line{Raw: s, Fields: map[string]string{}}
	for _, m := range fieldRE.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if uq, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
			v = uq
		}
		if _, dup := l.Fields[m[1]]; !dup {
			l.Fields[m[1]] = v
		}
	}
	l.Msg = l.Fields["msg"]
	l.Pid, _ = strconv.Atoi(l.Fields["pid"])
	return l
}

// Match selects log lines: by message and, if not zero, pid, and the
// fields given.
type Match struct {
	Msg string
	Pid int
	// Fields, if set, are values the line must have (Line.Fields).
	Fields map[string]string
}

func (m Match) match(l Line) bool {
	if l.Msg != m.Msg || m.Pid != 0 && l.Pid != m.Pid {
		return false
	}
	for k, v := range m.Fields {
		if l.Fields[k] != v {
			return false
		}
	}
	return true
}

// Logs collects the lines every generation of a service writes to the
// output they share. It is safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	lines   []Line
	pids    map[int]bool
	changed chan struct{} // closed and replaced on every new line
	done    chan struct{} // closed when the output has ended
}

// ReadLogs reads r line by line until it ends, in a goroutine of its own
// that ends with it. Start reads a service's output with it; a test that
// starts processes itself can too.
func ReadLogs(r io.Reader) *Logs { return readLogs(r, nil) }

// readLogs is ReadLogs, calling newPid, if not nil, with each pid at its
// first line, before the line is visible.
func readLogs(r io.Reader, newPid func(int)) *Logs {
	l := &Logs{changed: make(chan struct{}), pids: map[int]bool{}, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := ParseLine(sc.Text())
			l.mu.Lock()
			first := line.Pid > 0 && !l.pids[line.Pid]
			l.mu.Unlock()
			if first && newPid != nil {
				newPid(line.Pid)
			}
			l.mu.Lock()
			l.lines = append(l.lines, line)
			if line.Pid > 0 {
				l.pids[line.Pid] = true
			}
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		close(l.done)
		l.mu.Unlock()
	}()
	return l
}

// Done is closed once the output has ended: every process writing it has
// exited (or closed it).
func (l *Logs) Done() <-chan struct{} { return l.done }

// Len is the number of lines so far: an index to wait from.
func (l *Logs) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// Pids lists every pid that logged.
func (l *Logs) Pids() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for p := range l.pids {
		out = append(out, p)
	}
	return out
}

// Lines returns the lines from index from on.
func (l *Logs) Lines(from int) []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Line(nil), l.lines[from:]...)
}

// Wait waits up to timeout for the first line matching any of ms.
func (l *Logs) Wait(timeout time.Duration, ms ...Match) (Line, error) {
	return l.WaitFrom(0, timeout, ms...)
}

// WaitFrom waits up to timeout for a line matching any of ms at index from
// or later.
func (l *Logs) WaitFrom(from int, timeout time.Duration, ms ...Match) (Line, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line, err := l.WaitContext(ctx, from, ms...)
	if errors.Is(err, context.DeadlineExceeded) {
		return line, fmt.Errorf("timed out after %v waiting for %v", timeout, ms)
	}
	return line, err
}

// WaitContext waits for a line matching any of ms at index from or later,
// until ctx is done or the output ends.
func (l *Logs) WaitContext(ctx context.Context, from int, ms ...Match) (Line, error) {
	for {
		l.mu.Lock()
		for ; from < len(l.lines); from++ {
			for _, m := range ms {
				if m.match(l.lines[from]) {
					line := l.lines[from]
					l.mu.Unlock()
					return line, nil
				}
			}
		}
		changed, done := l.changed, l.done
		l.mu.Unlock()
		select {
		case <-done:
			// Lines read before the end are matched above first.
			if from == l.Len() {
				return Line{}, errors.New("log ended")
			}
		case <-changed:
		case <-ctx.Done():
			return Line{}, ctx.Err()
		}
	}
}

// Tail returns the last n lines, for an error message.
func (l *Logs) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines[max(0, len(l.lines)-n):] {
		b.WriteString(line.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// String returns the last 60 lines.
func (l *Logs) String() string { return l.Tail(60) }
