package upgrader

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
)

// ServeTLS is Serve for HTTPS: it serves srv on ln, which should come from
// Listen, with TLS, and drains it on Shutdown without dropping a request.
// The certificate comes from certFile and keyFile, or, if both are empty,
// from srv.TLSConfig (Certificates, GetCertificate or GetConfigForClient),
// as with http.Server.ServeTLS. Handlers get the real *tls.Conn: r.TLS is
// set, and HTTP/2 is negotiated by ALPN unless srv disables it. The drain
// sees the raw socket under TLS, so an idle TLS connection (one that only
// shook hands, or kept alive after its last reply) is closed after the idle
// grace, and an HTTP/2 connection gets a GOAWAY first.
//
// It returns an error, and serves nothing, if the certificate cannot be
// loaded or the TLS configuration is unusable for HTTP/2. srv.TLSConfig is
// cloned, as http.Server.ServeTLS does; to rotate certificates use
// GetCertificate.
func (u *Upgrader) ServeTLS(srv *http.Server, ln net.Listener, certFile, keyFile string) error {
	cfg, err := serverTLSConfig(srv, certFile, keyFile)
	if err != nil {
		return fmt.Errorf("upgrader: ServeTLS on %s: %w", ln.Addr(), err)
	}
	goAway, err := setupHTTP2(srv)
	if err != nil {
		return fmt.Errorf("upgrader: ServeTLS on %s: %w", ln.Addr(), err)
	}
	_, h2 := srv.TLSNextProto["h2"]
	cfg.NextProtos = alpn(cfg.NextProtos, h2, srv.Protocols == nil || srv.Protocols.HTTP1())
	u.serve(srv, tls.NewListener(trackingListener{Listener: ln, tls: true}, cfg), ln, goAway)
	return nil
}

// serverTLSConfig builds the config ServeTLS serves with, as
// http.Server.ServeTLS would: srv's, cloned, with the certificate loaded.
func serverTLSConfig(srv *http.Server, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{}
	if srv.TLSConfig != nil {
		cfg = srv.TLSConfig.Clone()
	}
	hasCert := len(cfg.Certificates) > 0 || cfg.GetCertificate != nil || cfg.GetConfigForClient != nil
	if !hasCert || certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// alpn returns the ALPN protocols to offer: the configured ones, with "h2"
// first if srv serves HTTP/2 and "http/1.1" if it serves HTTP/1, without
// "h2" otherwise (a client would speak it to a server that does not).
func alpn(protos []string, h2, h1 bool) []string {
	protos = slices.DeleteFunc(slices.Clone(protos), func(p string) bool { return p == "h2" && !h2 })
	if h2 && !slices.Contains(protos, "h2") {
		protos = append([]string{"h2"}, protos...)
	}
	if h1 && !slices.Contains(protos, "http/1.1") {
		protos = append(protos, "http/1.1")
	}
	return protos
}
