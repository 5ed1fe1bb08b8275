package upgrader

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Serve serves srv on ln, which should come from Listen, in a goroutine the
// Upgrader owns, and drains it on Shutdown without dropping a request. It
// wraps srv.Handler and srv.ConnState (the originals are still called), so
// call it before srv serves anything, and do not call srv.Shutdown yourself.
// In a process started by an upgrade, srv accepts connections only once
// Ready has succeeded; until then the previous generation accepts them.
func (u *Upgrader) Serve(srv *http.Server, ln net.Listener) {
	s := newHTTPServer(srv, ln, u.opts.IdleGrace)
	gate := u.tf.HasParent()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.servers = append(u.servers, s)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if gate {
			// Until it is ready the upgrade may still fail and this
			// process be killed (it hangs, or is stopped): every
			// request it had taken, and what the request changed,
			// would go with it, while the previous generation, which
			// accepts on the same sockets until then, would have
			// served it and kept the effect.
			select {
			case <-u.readyC:
			case <-u.stopPeriod: // closed: serve returns at once
			}
		}
		s.serve()
		if s.serveErr != nil {
			u.log.Error("http server stopped", "addr", ln.Addr().String(), "err", s.serveErr)
		}
	}()
}

// httpServer drains one *http.Server without losing a request.
//
// http.Server.Shutdown is not lossless for a process that hands its
// listener on: it closes idle keep-alive connections at once, and a request
// a client sent on such a connection just before the close is lost
// (golang/go#75591; Go's client re-sends a GET silently, a POST fails). So
// the drain here closes the listener first (the new process keeps accepting
// on the same socket), makes every response from then on say
// "Connection: close", so each busy connection ends after its next reply,
// and closes an idle connection only once nothing has arrived on it for the
// idle grace and nothing is waiting unread in its socket. What is still
// open at the deadline is closed and counted.
type httpServer struct {
	srv      *http.Server
	ln       net.Listener
	grace    time.Duration
	served   chan struct{} // closed when Serve returned
	serveErr error         // set before served is closed
	draining atomic.Bool

	mu    sync.Mutex
	conns map[*trackedConn]http.ConnState
	// gone receives a token whenever a connection ends during a drain.
	gone chan struct{}
}

func newHTTPServer(srv *http.Server, ln net.Listener, grace time.Duration) *httpServer {
	s := &httpServer{
		srv:    srv,
		ln:     ln,
		grace:  grace,
		served: make(chan struct{}),
		conns:  make(map[*trackedConn]http.ConnState),
		gone:   make(chan struct{}, 1),
	}
	handler := srv.Handler
	if handler == nil {
		handler = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			// net/http closes the connection after a response
			// that carries this header.
			w.Header().Set("Connection", "close")
		}
		handler.ServeHTTP(w, r)
	})
	userHook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if tc, ok := c.(*trackedConn); ok {
			s.track(tc, st)
		}
		if userHook != nil {
			userHook(c, st)
		}
	}
	return s
}

// serve runs Serve; the caller owns the goroutine.
func (s *httpServer) serve() {
	err := s.srv.Serve(trackingListener{s.ln})
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.serveErr = err
	close(s.served)
}

func (s *httpServer) track(c *trackedConn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
		if s.draining.Load() {
			select {
			case s.gone <- struct{}{}:
			default:
			}
		}
	case http.StateIdle:
		c.touch()
		c.partial.Store(false)
		s.conns[c] = st
	default:
		s.conns[c] = st
	}
}

func (s *httpServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// drain waits until every connection ended, or ctx is done. At the deadline
// it closes what is left and reports how many connections were closed, and
// how many of those were in the middle of a request. It also reports how
// many quiet idle connections it closed on the way. The listener must
// already be closed.
func (s *httpServer) drain(ctx context.Context) (forced, active, quiet int, err error) {
	s.draining.Store(true)
	// Serve returns once the listener is closed. Until then a connection
	// it accepted may not be tracked yet (ConnState runs after Accept), so
	// "no connections" means nothing before it has returned.
	select {
	case <-s.served:
	case <-ctx.Done():
	}
	tick := time.NewTicker(s.grace / 4)
	defer tick.Stop()
	for ctx.Err() == nil {
		if s.open() == 0 {
			s.srv.Close()
			return 0, 0, quiet, nil
		}
		select {
		case <-s.gone:
		case <-tick.C:
			quiet += s.closeQuiet()
		case <-ctx.Done():
		}
	}

	s.mu.Lock()
	forced = len(s.conns)
	for _, st := range s.conns {
		if st == http.StateActive {
			active++
		}
	}
	s.mu.Unlock()
	s.srv.Close()
	// Serve returns as soon as its listener is closed, unless a blocking
	// accept(2) is in flight (possible only if the socket lost O_NONBLOCK
	// while being passed on): then it returns with the next connection, so
	// the wait is bounded rather than left to a client.
	select {
	case <-s.served:
	case <-time.After(time.Second):
	}
	return forced, active, quiet, ctx.Err()
}

// closeQuiet closes the connections that are idle, have received nothing
// for the grace period and have nothing unread in their socket. A request
// can still cross the close on the network, as with any server closing an
// idle HTTP/1.1 connection; on loopback the window is the time between the
// checks and the close.
func (s *httpServer) closeQuiet() int {
	now := time.Now()
	var quiet []*trackedConn
	s.mu.Lock()
	for c, st := range s.conns {
		if (st == http.StateIdle || st == http.StateNew) && now.Sub(c.lastActive()) >= s.grace && unread(c.Conn) == 0 && !c.partial.Load() {
			quiet = append(quiet, c)
		}
	}
	s.mu.Unlock()
	for _, c := range quiet {
		c.Close()
	}
	return len(quiet)
}

// trackingListener hands out trackedConns.
type trackingListener struct{ net.Listener }

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	tc.touch()
	return tc, nil
}

// trackedConn records when it last received bytes. It keeps CloseWrite and
// ReadFrom of the connection it wraps, which net/http uses for a clean close
// and for sendfile.
type trackedConn struct {
	net.Conn
	last atomic.Int64 // unix nanoseconds of the last read or state change
	// partial is set by a read on a new or idle connection: a request
	// has begun. net/http reports the connection active only once the
	// request's headers are complete, so without it a client that pauses
	// in the middle of its headers for longer than the idle grace would
	// see its request dropped by the drain.
	partial atomic.Bool
}

func (c *trackedConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *trackedConn) lastActive() time.Time { return time.Unix(0, c.last.Load()) }

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch()
		c.partial.Store(true)
	}
	return n, err
}

func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
