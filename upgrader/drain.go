package upgrader

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// httpServer drains one *http.Server without losing a request.
//
// http.Server.Shutdown is not lossless for a process that hands its
// listener on: it closes idle keep-alive connections, and a request a client
// sent on such a connection just before the close is lost (golang/go#75591;
// Go's client re-sends a GET silently, a POST fails). So the drain here
// never closes a connection that may carry a request: the listener is
// closed first (the new process keeps accepting on the same socket), every
// response from then on says "Connection: close", and each connection ends
// after the reply to the next request it carries. Only connections still
// open at the deadline are closed, and counted.
type httpServer struct {
	srv      *http.Server
	ln       net.Listener
	served   chan struct{} // closed when Serve returned
	serveErr error         // set before served is closed
	draining atomic.Bool

	mu     sync.Mutex
	conns  map[net.Conn]http.ConnState
	idle   chan struct{} // closed when draining and conns is empty
	closed bool          // idle is closed
}

func newHTTPServer(srv *http.Server, ln net.Listener) *httpServer {
	s := &httpServer{
		srv:    srv,
		ln:     ln,
		served: make(chan struct{}),
		conns:  make(map[net.Conn]http.ConnState),
		idle:   make(chan struct{}),
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
		s.track(c, st)
		if userHook != nil {
			userHook(c, st)
		}
	}
	return s
}

// serve runs Serve; the caller owns the goroutine.
func (s *httpServer) serve() {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.serveErr = err
	close(s.served)
}

func (s *httpServer) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	default:
		s.conns[c] = st
	}
	s.signalIdleLocked()
}

func (s *httpServer) signalIdleLocked() {
	if s.draining.Load() && len(s.conns) == 0 && !s.closed {
		s.closed = true
		close(s.idle)
	}
}

// drain waits until every connection ended by itself, or ctx is done. At
// the deadline it closes what is left and reports how many connections were
// closed, and how many of those were in the middle of a request. The
// listener must already be closed.
func (s *httpServer) drain(ctx context.Context) (forced, active int, err error) {
	s.draining.Store(true)
	s.mu.Lock()
	s.signalIdleLocked()
	s.mu.Unlock()

	select {
	case <-s.served:
	case <-ctx.Done():
	}
	select {
	case <-s.idle:
		s.srv.Close()
		return 0, 0, nil
	case <-ctx.Done():
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
	return forced, active, ctx.Err()
}
