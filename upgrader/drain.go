package upgrader

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Serve serves srv on ln, which should come from Listen, in a goroutine the
// Upgrader owns, and drains it on Shutdown without dropping a request. It
// wraps srv.Handler, srv.ConnState and srv.ConnContext (the originals are
// still called), so call it before srv serves anything, and do not call
// srv.Shutdown yourself. In a process started by an upgrade, srv accepts
// connections only once Ready has succeeded; until then the previous
// generation accepts them.
//
// For HTTPS use ServeTLS, which sees the raw socket under TLS. A listener
// that hands out *tls.Conn (tls.NewListener) works too, with r.TLS and
// HTTP/2 if its config offers "h2", but the drain then sees only the
// connections' state changes: an idle connection is closed once it has
// been idle for the grace with nothing unread in its socket, and pipelined
// requests on it are not protected. A listener whose connections hide
// their socket (no syscall.Conn, no NetConn) is drained by the idle grace
// alone.
//
// Serve sets up net/http's HTTP/2 on srv itself, so that the drain can send
// GOAWAY to idle HTTP/2 connections too; if that fails (a TLSConfig whose
// cipher suites HTTP/2 refuses) it logs the error and serves without
// HTTP/2. ServeTLS returns that error instead.
func (u *Upgrader) Serve(srv *http.Server, ln net.Listener) {
	goAway, err := setupHTTP2(srv)
	if err != nil {
		u.log.Error("serving without HTTP/2", "addr", ln.Addr().String(), "err", err)
	}
	u.serve(srv, trackingListener{Listener: ln}, ln, goAway)
}

// serve serves srv on tl, which wraps the listener ln Listen returned;
// goAway is what setupHTTP2 returned for srv.
func (u *Upgrader) serve(srv *http.Server, tl net.Listener, ln net.Listener, goAway func()) {
	s := newHTTPServer(srv, ln, u.opts.IdleGrace, u.log)
	s.goAway = goAway
	if u.metrics != nil {
		s.inFlight = u.metrics.inFlight
	}
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
		s.serve(tl)
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
// on the same socket), sends every HTTP/2 connection a GOAWAY, makes every
// HTTP/1 response from then on say "Connection: close", unless more
// pipelined requests were received on its connection, so each busy
// connection ends after its last reply, and closes an idle connection only
// once nothing has arrived on it for the idle grace and nothing is waiting
// unread in its socket. What is still open at the deadline is closed and
// counted.
type httpServer struct {
	srv      *http.Server
	ln       net.Listener
	grace    time.Duration
	log      *slog.Logger
	served   chan struct{} // closed when Serve returned
	serveErr error         // set before served is closed
	draining atomic.Bool
	// drainC is closed when the drain begins; handlers see it through
	// Draining.
	drainC    chan struct{}
	drainOnce sync.Once
	// goAway sends a graceful GOAWAY to every HTTP/2 connection; nil if
	// srv does not serve HTTP/2 through net/http's own implementation.
	goAway func()
	// goAwayAt is when maybeGoAway first sent it (unix nanoseconds).
	goAwayAt atomic.Int64
	// blind is set once a connection hid its socket: logged once.
	blind atomic.Bool
	// inFlight counts the requests in the handler; nil without metrics.
	// Set before serve starts the server.
	inFlight prometheus.Gauge

	mu    sync.Mutex
	conns map[*trackedConn]http.ConnState
	// records maps the connections net/http reports to their records
	// where they are not the record itself (*tls.Conn).
	records map[net.Conn]*trackedConn
	// gone receives a token whenever a connection ends during a drain.
	gone chan struct{}
}

// connKey is the context key under which a connection's context holds its
// server and record.
type connKey struct{}

type connInfo struct {
	s   *httpServer
	rec *trackedConn
}

func newHTTPServer(srv *http.Server, ln net.Listener, grace time.Duration, log *slog.Logger) *httpServer {
	s := &httpServer{
		srv:     srv,
		ln:      ln,
		grace:   grace,
		log:     log,
		served:  make(chan struct{}),
		drainC:  make(chan struct{}),
		conns:   make(map[*trackedConn]http.ConnState),
		records: make(map[net.Conn]*trackedConn),
		gone:    make(chan struct{}, 1),
	}
	handler := srv.Handler
	if handler == nil {
		handler = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.inFlight != nil {
			s.inFlight.Inc()
			defer s.inFlight.Dec()
		}
		if s.draining.Load() {
			s.closeAfter(w, r)
		}
		handler.ServeHTTP(w, r)
	})
	userHook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if rec := s.record(c, st == http.StateNew); rec != nil {
			s.track(c, rec, st)
		}
		if userHook != nil {
			userHook(c, st)
		}
	}
	userCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userCtx != nil {
			ctx = userCtx(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, connInfo{s: s, rec: s.record(c, true)})
	}
	return s
}

// closeAfter makes the reply to r, during a drain, end its connection,
// unless more requests already wait on it. HTTP/2 takes the header as
// the signal to send GOAWAY.
func (s *httpServer) closeAfter(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		info, _ := r.Context().Value(connKey{}).(connInfo)
		if info.rec != nil && (info.rec.receivedMore(r) || info.rec.lingerPipelined(r)) {
			return
		}
	}
	// net/http closes the connection after a response that carries
	// this header.
	w.Header().Set("Connection", "close")
}

// record returns the record of a connection net/http reports: the
// trackedConn itself, the one under a *tls.Conn ServeTLS made, or, for a
// *tls.Conn the user's listener made, a detached record that create makes
// if there is none yet.
func (s *httpServer) record(c net.Conn, create bool) *trackedConn {
	switch c := c.(type) {
	case *trackedConn:
		return c
	case *tls.Conn:
		if tc, ok := c.NetConn().(*trackedConn); ok {
			return tc
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.records[c]
	if rec == nil && create {
		rec = &trackedConn{Conn: rawConn(c), tls: true, detached: true}
		rec.touch()
		s.records[c] = rec
	}
	return rec
}

// serve runs Serve on l; the caller owns the goroutine.
func (s *httpServer) serve(l net.Listener) {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.serveErr = err
	close(s.served)
}

func (s *httpServer) track(c net.Conn, rec *trackedConn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.setState(st)
	if tc, ok := c.(*tls.Conn); ok && !rec.protoChecked && (st == http.StateActive || st == http.StateIdle) {
		// The handshake is over once net/http reports either.
		rec.protoChecked = true
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			rec.h2.Store(true)
		}
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, rec)
		delete(s.records, c)
		if s.draining.Load() {
			select {
			case s.gone <- struct{}{}:
			default:
			}
		}
	default:
		s.conns[rec] = st
	}
}

func (s *httpServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// beginDrain marks the drain begun: replies close their connections (an
// HTTP/2 one sends GOAWAY ahead of the reply that says so), and handlers
// watching Draining are told. Shutdown sets draining itself before it
// closes the listeners; the rest happens here, once.
func (s *httpServer) beginDrain() {
	s.draining.Store(true)
	s.drainOnce.Do(func() { close(s.drainC) })
}

// maybeGoAway sends GOAWAY to every HTTP/2 connection once none of them is
// between requests, that is idle but recently active. net/http's GOAWAY is
// the single one, naming the last stream read: a client that had just
// got a reply and sent its next request is told that request was refused,
// and clients that do not retry it (curl 7.88 fails with "Error in the
// HTTP2 framing layer") would lose it. A busy connection needs no such
// GOAWAY: its next reply says "Connection: close", and net/http's HTTP/2
// server then queues the GOAWAY ahead of that reply, before the client
// can send another request. So the broadcast waits until the idle ones
// have been idle for the grace; a connection with a stream open (a
// stream, an SSE) gets it too and keeps its stream.
func (s *httpServer) maybeGoAway() {
	if s.goAway == nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	for c, st := range s.conns {
		if c.h2.Load() && st == http.StateIdle && now.Sub(c.lastActive()) < s.grace {
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	s.goAway()
	s.goAwayAt.CompareAndSwap(0, now.UnixNano())
}

// drain waits until every connection ended, or ctx is done. At the deadline
// it closes what is left and reports how many connections were closed, and
// how many of those were in the middle of a request. It also reports how
// many quiet idle connections it closed on the way. The listener must
// already be closed.
func (s *httpServer) drain(ctx context.Context) (forced, active, quiet int, err error) {
	s.beginDrain()
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
			// Repeated: an HTTP/2 connection accepted just before
			// the listener closed may register after a GOAWAY went
			// out; each connection sends one at most.
			s.maybeGoAway()
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
// checks and the close. A connection whose socket cannot be looked into
// is judged by the grace alone.
func (s *httpServer) closeQuiet() int {
	now := time.Now()
	var quiet []*trackedConn
	s.mu.Lock()
	for c, st := range s.conns {
		// partial means a request began only in HTTP/1: HTTP/2
		// reads frames (WINDOW_UPDATE, PING) between requests.
		if (st != http.StateIdle && st != http.StateNew) || now.Sub(c.lastActive()) < s.grace || (c.partial.Load() && !c.h2.Load()) {
			continue
		}
		if at := s.goAwayAt.Load(); c.h2.Load() && s.goAway != nil && (at == 0 || now.Sub(time.Unix(0, at)) < s.grace/4) {
			// GOAWAY first (maybeGoAway), then, a check later,
			// the close: net/http's own would come only a second
			// after the GOAWAY.
			continue
		}
		n := unread(rawConn(c.Conn))
		if n < 0 && !s.blind.Swap(true) {
			s.log.Warn("a connection hides its socket: the drain judges it idle by the idle grace alone; give its type a NetConn method",
				"addr", s.ln.Addr().String(), "type", fmt.Sprintf("%T", c.Conn))
		}
		if n <= 0 {
			quiet = append(quiet, c)
		}
	}
	s.mu.Unlock()
	for _, c := range quiet {
		c.Close()
	}
	return len(quiet)
}
