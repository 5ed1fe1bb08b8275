package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/batonhq/baton/upgrader"
)

// webConfig is how the demo serves beyond HTTP/1.1 in clear text.
type webConfig struct {
	tlsCert, tlsKey string
	tlsAddr         string
	h2c             bool
	eventInterval   time.Duration
}

func (c *webConfig) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.tlsCert, "tls-cert", "", "also serve HTTPS (HTTP/2 and HTTP/1.1) with the certificate in this PEM `file`")
	fs.StringVar(&c.tlsKey, "tls-key", "", "the private key, a PEM `file`, for -tls-cert")
	fs.StringVar(&c.tlsAddr, "tls-addr", "127.0.0.1:8443", "TCP `address` to serve HTTPS on, with -tls-cert")
	fs.BoolVar(&c.h2c, "h2c", false, "also serve HTTP/2 in clear text (h2c, prior knowledge) on -addr")
	fs.DurationVar(&c.eventInterval, "event-interval", time.Second, "how often GET /events sends an event")
}

func (c *webConfig) check() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return fmt.Errorf("-tls-cert and -tls-key go together")
	}
	if c.eventInterval <= 0 {
		return fmt.Errorf("-event-interval must be positive, not %v", c.eventInterval)
	}
	return nil
}

// protocols is what the clear-text server speaks: HTTP/1, and h2c with
// -h2c.
func (c *webConfig) protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(c.h2c)
	return &p
}

// serveTLS listens on -tls-addr and serves h there over TLS. It returns
// the listener's address, or "" without -tls-cert.
func (c *webConfig) serveTLS(u *upgrader.Upgrader, h http.Handler) (string, error) {
	if c.tlsCert == "" {
		return "", nil
	}
	ln, err := u.Listen("tcp", c.tlsAddr)
	if err != nil {
		return "", listenError("-tls-addr", c.tlsAddr, err)
	}
	// Session tickets the old process issued resume with the new one.
	tickets, err := u.ShareTLSSessionTickets()
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{}}
	tickets.Configure(srv.TLSConfig)
	if err := u.ServeTLS(srv, ln, c.tlsCert, c.tlsKey); err != nil {
		return "", err
	}
	return ln.Addr().String(), nil
}

// events streams server-sent events: one at once and one every interval,
// each with the pid, until the drain begins; then a last "bye" event, and
// the stream ends cleanly, so that the client reconnects to the new
// process.
func events(interval time.Duration) http.HandlerFunc {
	pid := os.Getpid()
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			fmt.Fprintf(w, "event: tick\nid: %d\ndata: %d\n\n", seq, pid)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-upgrader.Draining(r.Context()):
				fmt.Fprintf(w, "event: bye\ndata: %d\n\n", pid)
				rc.Flush()
				return
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}
}

// connKind says how a request came: "proto" is r.Proto, "tls" whether it
// came over TLS.
func connKind(r *http.Request) (proto string, tls bool) { return r.Proto, r.TLS != nil }
