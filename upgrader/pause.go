package upgrader

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// pausableListener is a listener that can stop accepting without closing
// its socket, and start again: what the old process does during a
// probation (Options.Probation). While it is paused the socket stays open,
// so the kernel's accept queue, shared with the new process, survives
// whatever the new process does; resuming accepts from that queue at once.
// Listen returns one for a TCP or Unix stream listener when
// Options.Probation is set; not for the control socket, which the old
// process answers until the commit.
type pausableListener struct {
	net.Listener

	mu      sync.Mutex
	paused  bool
	resumed chan struct{} // closed by resume; replaced by pause
	// inAccept counts the Accepts inside the listener's own Accept; idle,
	// if not nil, is closed when that count falls to zero (pause waits
	// for it).
	inAccept int
	idle     chan struct{}
	closed   chan struct{}
	once     sync.Once
}

func newPausableListener(ln net.Listener) *pausableListener {
	r := make(chan struct{})
	close(r)
	return &pausableListener{Listener: ln, resumed: r, closed: make(chan struct{})}
}

// deadliner is the part of *net.TCPListener and *net.UnixListener that
// interrupts an Accept in progress.
type deadliner interface{ SetDeadline(time.Time) error }

// pauseBarrier bounds pause's wait for the Accepts in progress to return.
const pauseBarrier = time.Second

// Accept accepts the next connection once the listener is not paused.
func (l *pausableListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		paused, resumed := l.paused, l.resumed
		if !paused {
			l.inAccept++
		}
		l.mu.Unlock()
		if paused {
			select {
			case <-resumed:
				continue
			case <-l.closed:
				return nil, net.ErrClosed
			}
		}
		c, err := l.Listener.Accept()
		l.mu.Lock()
		l.inAccept--
		if l.inAccept == 0 && l.idle != nil {
			close(l.idle)
			l.idle = nil
		}
		l.mu.Unlock()
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		// Only pause sets a deadline (the listener is not handed out):
		// wait for the resume. http.Server would back off on a timeout.
	}
}

// pause stops accepting; the socket stays open. It is a barrier: an Accept
// in progress is interrupted through the listener's deadline, and pause
// returns once it has returned (bounded by pauseBarrier). A connection
// that Accept got first (the deadline's wake-up can lose to a connection
// arriving at the same moment) is this process's to serve; none is
// accepted after pause returns.
func (l *pausableListener) pause() {
	l.mu.Lock()
	if l.paused {
		l.mu.Unlock()
		return
	}
	l.paused = true
	l.resumed = make(chan struct{})
	var idle chan struct{}
	if l.inAccept > 0 {
		idle = make(chan struct{})
		l.idle = idle
	}
	if d, ok := l.Listener.(deadliner); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	l.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-time.After(pauseBarrier):
		}
	}
}

// resume accepts again, at once.
func (l *pausableListener) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.paused {
		return
	}
	l.paused = false
	// The deadline is cleared before the waiters are released, under the
	// lock pause takes: an Accept never sees a stale one.
	if d, ok := l.Listener.(deadliner); ok {
		d.SetDeadline(time.Time{})
	}
	close(l.resumed)
}

// Close closes the listener and wakes an Accept waiting for a resume.
func (l *pausableListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// SyscallConn returns the socket's, for the check of stray listeners.
func (l *pausableListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, errors.New("listener has no file descriptor")
	}
	return sc.SyscallConn()
}

// File returns a duplicate of the socket, as *net.TCPListener's File does.
func (l *pausableListener) File() (*os.File, error) {
	f, ok := l.Listener.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, errors.New("listener has no file descriptor")
	}
	return f.File()
}

// pauseListeners stops every pausable listener accepting, for a probation.
func (u *Upgrader) pauseListeners() {
	for _, l := range u.pausables() {
		l.pause()
	}
}

// resumeListeners makes every paused listener accept again: a rollback.
func (u *Upgrader) resumeListeners() {
	for _, l := range u.pausables() {
		l.resume()
	}
}

func (u *Upgrader) pausables() []*pausableListener {
	u.mu.Lock()
	defer u.mu.Unlock()
	var ls []*pausableListener
	for _, c := range u.closers {
		if l, ok := c.(*pausableListener); ok {
			ls = append(ls, l)
		}
	}
	return ls
}
