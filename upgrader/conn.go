package upgrader

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// trackingListener hands out trackedConns. Under ServeTLS it is the
// listener the TLS listener wraps, so that the drain reads the raw socket
// while net/http still gets a real *tls.Conn.
type trackingListener struct {
	net.Listener
	tls bool // the conns carry TLS records, not HTTP/1 text
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		// The user wrapped the listener in TLS: wrapping the conn
		// again would hide the *tls.Conn from net/http (no r.TLS, no
		// ALPN). It is tracked by its state changes only; see
		// httpServer.record.
		return tc, nil
	}
	t := &trackedConn{Conn: c, tls: l.tls}
	t.touch()
	return t, nil
}

// trackedConn records what the drain needs to know about one connection:
// when it last received bytes, whether a request has begun, and, for
// HTTP/1, whether requests were received that are not answered yet. It
// keeps CloseWrite and ReadFrom of the connection it wraps, which net/http
// uses for a clean close and for sendfile.
type trackedConn struct {
	net.Conn
	// tls says the bytes read are TLS records: their content cannot be
	// seen, and a read in a new connection is the handshake.
	tls bool
	// detached is set for a connection the user's listener wrapped in
	// TLS: its reads cannot be seen, only its state changes.
	detached bool

	last atomic.Int64 // unix nanoseconds of the last read or state change
	// partial is set by a read on a new or idle connection: a request
	// has begun. net/http reports the connection active only once the
	// request's headers are complete, so without it a client that pauses
	// in the middle of its headers for longer than the idle grace would
	// see its request dropped by the drain.
	partial atomic.Bool
	state   atomic.Int32 // the last http.ConnState
	// h2 is set once the connection is known to speak HTTP/2: it ends
	// with a GOAWAY, which the drain sends, never with a bare close.
	h2 atomic.Bool
	// protoChecked says track looked at the TLS connection's ALPN
	// protocol; guarded by httpServer.mu.
	protoChecked bool

	// HTTP/1 pipelining: a client may send requests before the replies
	// to the earlier ones. net/http reads them ahead into its buffer, so
	// the socket looks empty while they wait; a reply that says
	// "Connection: close" then loses them.
	reads      atomic.Int64 // reads that returned bytes
	readsBegun atomic.Int64 // reads when the current request became active
	started    atomic.Int64 // requests begun (StateActive transitions)
	ends       atomic.Int64 // blank lines read: ends of request headers
	pipelined  atomic.Bool  // a request began with no read since the one before
	bodies     atomic.Bool  // a request had a body: ends over-counts
	bol        bool         // the line being read is empty so far; only the reader touches it
	// Over TLS: the value of reads at the last read that brought two or
	// more TLS application-data records, which may hold more than one
	// request; and the framing state of the records, touched only by
	// the reader.
	multiAt atomic.Int64
	recHdr  [5]byte
	recHave int // header bytes of the next record read so far
	recLeft int // body bytes of the current record still to come
}

func (c *trackedConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *trackedConn) lastActive() time.Time { return time.Unix(0, c.last.Load()) }

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch()
		if c.reads.Add(1) == 1 && !c.tls && bytes.HasPrefix(p[:n], []byte("PRI * HTTP/2.0")) {
			c.h2.Store(true) // h2c with prior knowledge
		}
		// Under TLS a read on a new connection is the handshake, not a
		// request: a client that shakes hands and waits is idle.
		if !c.tls || http.ConnState(c.state.Load()) == http.StateIdle {
			c.partial.Store(true)
		}
		if !c.tls {
			c.countEnds(p[:n])
		} else if c.countRecords(p[:n]) >= 2 {
			c.multiAt.Store(c.reads.Load())
		}
	}
	return n, err
}

// countEnds counts the empty lines in p, each the end of a request's
// header. Bodies can hold empty lines too, so the count can only be too
// high, never too low: too high keeps a connection open for its idle grace
// rather than losing a request.
func (c *trackedConn) countEnds(p []byte) {
	onlyCR := func(b []byte) bool { return len(bytes.Trim(b, "\r")) == 0 }
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.bol = c.bol && onlyCR(p)
			return
		}
		if c.bol && onlyCR(p[:i]) {
			c.ends.Add(1)
		}
		c.bol = true
		p = p[i+1:]
	}
}

// countRecords follows the TLS record framing through p and returns how
// many application-data records (content type 23; in TLS 1.3 every
// encrypted record) begin in it.
func (c *trackedConn) countRecords(p []byte) int {
	const recordHeader, applicationData = 5, 23
	n := 0
	for len(p) > 0 {
		if c.recLeft > 0 {
			k := min(c.recLeft, len(p))
			c.recLeft -= k
			p = p[k:]
			continue
		}
		k := copy(c.recHdr[c.recHave:], p)
		c.recHave += k
		p = p[k:]
		if c.recHave < recordHeader {
			return n
		}
		c.recHave = 0
		c.recLeft = int(c.recHdr[3])<<8 | int(c.recHdr[4])
		if c.recHdr[0] == applicationData {
			n++
		}
	}
	return n
}

// setState records a state change net/http reported.
func (c *trackedConn) setState(st http.ConnState) {
	prev := http.ConnState(c.state.Swap(int32(st)))
	switch st {
	case http.StateIdle:
		c.touch()
		c.partial.Store(false)
	case http.StateActive:
		c.started.Add(1)
		reads := c.reads.Load()
		before := c.readsBegun.Swap(reads)
		if prev == http.StateIdle && reads == before && !c.detached {
			// This request came in the same read as the one
			// before: the client sent them together. (A request
			// that a client sent after its reply came is read
			// after that request began, if only by net/http's
			// background read, which under TLS may take the whole
			// record.)
			c.pipelined.Store(true)
		}
	}
}

// receivedMore reports whether an HTTP/1 connection has received more
// than the request r that is about to be answered: then a reply that
// closes the connection would lose what came after. When it cannot tell,
// it says yes: the connection then stays open until it is idle for the
// grace, which loses nothing.
func (c *trackedConn) receivedMore(r *http.Request) bool {
	if n := unread(rawConn(c.Conn)); n > 0 {
		return true
	}
	noBody := r.ContentLength == 0 && len(r.TransferEncoding) == 0
	if !noBody {
		c.bodies.Store(true)
	}
	if c.detached {
		return false // nothing more can be seen
	}
	if c.started.Load() == 1 {
		// A connection's first reply never closes it: whether its
		// client pipelines is not known yet, and one that does may
		// write its first requests one by one (h2load), or send more
		// after a reply that says "Connection: close" (h2load again).
		// A client that sent one request closes one reply later.
		return true
	}
	if noBody && c.reads.Load() > c.readsBegun.Load() {
		// Read since the headers were complete: the next request
		// (or the client's close).
		return true
	}
	if !c.tls && !c.bodies.Load() {
		return c.ends.Load() > c.started.Load()
	}
	// Over TLS the buffered requests cannot be counted: a client seen
	// pipelining may have more waiting, and so may a request that came
	// in one read with other records (net/http takes one record at a
	// time from crypto/tls, which keeps the others).
	return c.pipelined.Load() || c.multiAt.Load() == c.readsBegun.Load()
}

// pipelineLinger is how long the drain waits, before it answers a
// pipelining client's last received request with "Connection: close", for
// more requests the client may have sent on its way: one that keeps a
// window of requests outstanding sends the next on each reply, and those
// would otherwise cross the close (h2load -m 4 does not re-send them). A
// client starved of CPU can take tens of milliseconds to send: 20 ms lost
// 6 to 36 of 30,000 requests of TestH2loadUpgrades with both cores busy;
// 250 ms lost none. It delays the end of a pipelining connection's drain
// by as much, nothing else.
const pipelineLinger = 250 * time.Millisecond

// lingerPipelined waits up to pipelineLinger for more requests on an
// HTTP/1 connection seen pipelining, and reports whether some came. Other
// connections close at once: their clients wait for each reply before
// they send again.
func (c *trackedConn) lingerPipelined(r *http.Request) bool {
	if c.detached || !c.pipelined.Load() {
		return false
	}
	for deadline := time.Now().Add(pipelineLinger); time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		if c.receivedMore(r) {
			return true
		}
	}
	return false
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

// rawConn unwraps c (through NetConn, as *tls.Conn offers) down to a
// connection whose socket can be looked into, or returns c.
func rawConn(c net.Conn) net.Conn {
	for range 8 {
		if _, ok := c.(syscall.Conn); ok {
			return c
		}
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = nc.NetConn()
	}
	return c
}
