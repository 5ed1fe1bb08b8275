package upgrader

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
)

// setupHTTP2 gives srv net/http's own HTTP/2 server (for "h2" over TLS and,
// if srv.Protocols asks for it, unencrypted HTTP/2) in a way that lets the
// drain send GOAWAY to its connections, and returns the function that
// does. It returns nil, changing nothing, when srv brings its own HTTP/2
// (golang.org/x/net/http2.ConfigureServer) or has it disabled: such
// connections still get a GOAWAY with the first reply during the drain
// (net/http's HTTP/2 server takes "Connection: close" as the signal) and
// idle ones are closed after the idle grace.
//
// net/http sends GOAWAY to its HTTP/2 connections only from
// Server.Shutdown, which also closes idle HTTP/1 connections at once, the
// loss the drain exists to avoid. So the HTTP/2 server is set up on a
// second, private http.Server that never serves anything: its
// TLSNextProto handlers serve srv's connections (with srv's handler, hooks
// and limits: net/http passes srv as the base config), and its Shutdown,
// which has no connections or listeners of its own to close, reaches
// exactly the HTTP/2 connections. net/http's GOAWAY is the single, graceful
// one: it names the last stream the server read, lets those streams
// finish, and closes the connection a second after the last one; a stream
// the client opened after that (in flight while the GOAWAY was) is refused
// with it, never half served, and clients retry it on a new connection,
// which reaches the new process. The two-step GOAWAY (first 2^31-1, then
// the real last stream after a round trip) is not offered by net/http.
//
// It returns an error if net/http refuses srv's TLS configuration for
// HTTP/2 (cipher suites without one HTTP/2 requires).
func setupHTTP2(srv *http.Server) (goAway func(), err error) {
	if srv.TLSNextProto != nil {
		return nil, nil // the user's own HTTP/2, or HTTP/2 disabled
	}
	shadow := &http.Server{Protocols: srv.Protocols, HTTP2: srv.HTTP2}
	if srv.TLSConfig != nil {
		// http2 checks the cipher suites on it. Without a certificate
		// ServeTLS stops before it serves.
		shadow.TLSConfig = srv.TLSConfig.Clone()
		shadow.TLSConfig.Certificates = nil
		shadow.TLSConfig.GetCertificate = nil
		shadow.TLSConfig.GetConfigForClient = nil
	}
	// ServeTLS sets up HTTP/2 first, then fails for want of a
	// certificate before it touches the listener.
	// The certificate's "open : no such file" is that expected failure;
	// any other is HTTP/2's verdict on the configuration.
	var pathErr *fs.PathError
	if err := shadow.ServeTLS(closedListener{}, "", ""); !errors.As(err, &pathErr) {
		return nil, err
	}
	if _, ok := shadow.TLSNextProto["h2"]; !ok {
		return nil, nil // HTTP/2 off (Protocols, GODEBUG=http2server=0)
	}
	srv.TLSNextProto = shadow.TLSNextProto
	return func() { shadow.Shutdown(context.Background()) }, nil
}

// closedListener is a listener that is already closed.
type closedListener struct{}

func (closedListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (closedListener) Close() error              { return nil }
func (closedListener) Addr() net.Addr            { return &net.TCPAddr{} }
