package upgrader

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// serveTLSForTest serves srv with ServeTLS.
func serveTLSForTest(u *Upgrader, srv *http.Server, ln net.Listener, cf, kf string) error {
	return u.ServeTLS(srv, ln, cf, kf)
}

// TestServeTLS serves HTTPS from certificate files and from
// TLSConfig.GetCertificate: handlers see r.TLS, Go's client negotiates
// HTTP/2 and, when told to, HTTP/1.1; then an idle TLS connection, an idle
// HTTP/2 connection and an HTTP/1.1 one kept alive must not hold the drain.
func TestServeTLS(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files bool
	}{{"files", true}, {"GetCertificate", false}} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			u, ln := listenForTest(t)
			cf, kf, pair := testCert(t, t.TempDir())
			srv := &http.Server{Handler: http.HandlerFunc(protoHandler)}
			if !tc.files {
				cf, kf = "", ""
				srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }}
			}
			if err := u.ServeTLS(srv, ln, cf, kf); err != nil {
				t.Fatal(err)
			}
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			url := "https://" + ln.Addr().String() + "/"
			h2 := h2Client()
			defer h2.CloseIdleConnections()
			h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
				TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
			}}
			defer h1.CloseIdleConnections()
			for c, want := range map[*http.Client]string{h2: "HTTP/2.0 tls", h1: "HTTP/1.1 tls"} {
				got, err := get(c, url)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("handler saw %q, want %q", got, want)
				}
			}
			idleTLSConn(t, ln.Addr().String())
			shutdownWithin(t, u, 5*time.Second)
		})
	}
}

func TestServeTLSBadCertificate(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, _ := newTestUpgrader(t, Options{})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err = u.ServeTLS(&http.Server{}, ln, dir+"/missing.pem", dir+"/missing.key")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ServeTLS with missing files: %v, want fs.ErrNotExist", err)
	}
	// Nothing serves: the upgrader still works and stops at once.
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	shutdownWithin(t, u, 5*time.Second)
}

// TestDraining streams events until the drain begins: the handler sees
// Draining, sends a last event and returns, and the drain ends long before
// its deadline, over HTTP/1.1 and HTTP/2.
func TestDraining(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			u, ln := listenForTest(t)
			if Draining(context.Background()) != nil {
				t.Fatal("Draining of a context from no request is not nil")
			}
			cf, kf, _ := testCert(t, t.TempDir())
			streaming := make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "data: hello\n\n")
				w.(http.Flusher).Flush()
				close(streaming)
				select {
				case <-Draining(r.Context()):
					io.WriteString(w, "data: bye\n\n")
				case <-r.Context().Done():
				}
			})}
			if err := u.ServeTLS(srv, ln, cf, kf); err != nil {
				t.Fatal(err)
			}
			u.Ready()
			c := h2Client()
			if proto == "HTTP/1.1" {
				c.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer c.CloseIdleConnections()
			resp, err := c.Get("https://" + ln.Addr().String() + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != proto {
				t.Fatalf("proto %s, want %s", resp.Proto, proto)
			}
			<-streaming
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				shutdownWithin(t, u, 5*time.Second)
			}()
			var events []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if line := sc.Text(); line != "" {
					events = append(events, line)
				}
			}
			if err := sc.Err(); err != nil {
				t.Errorf("stream ended with %v, want a clean end", err)
			}
			if got := strings.Join(events, ","); got != "data: hello,data: bye" {
				t.Errorf("events %q, want hello then bye", got)
			}
			<-drained
		})
	}
}

// TestSessionTickets resumes TLS sessions sealed with SessionTickets: across
// rotations while the sealing key is kept, and not once it has rotated out;
// a ticket from other keys is ignored (a full handshake), not an error.
func TestSessionTickets(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, ln := listenForTest(t)
	cf, kf, _ := testCert(t, t.TempDir())
	tk, err := u.ShareTLSSessionTickets()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(protoHandler), TLSConfig: &tls.Config{}}
	tk.Configure(srv.TLSConfig)
	if err := u.ServeTLS(srv, ln, cf, kf); err != nil {
		t.Fatal(err)
	}
	u.Ready()
	cache := tls.NewLRUClientSessionCache(8)
	resumed := func() bool {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache}}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.TLS.DidResume
	}
	if resumed() {
		t.Fatal("first handshake resumed")
	}
	if !resumed() {
		t.Error("second handshake not resumed")
	}
	// The ticket the last handshake left is sealed with the newest key.
	for range maxTicketKeys - 1 {
		tk.Rotate()
	}
	if !resumed() {
		t.Error("a ticket sealed with a key still kept did not resume")
	}
	for range maxTicketKeys {
		tk.Rotate()
	}
	if resumed() {
		t.Error("a ticket sealed with a key rotated out resumed")
	}
	other := &SessionTickets{}
	other.Rotate()
	if ss, err := other.unwrap(make([]byte, 64), tls.ConnectionState{}); ss != nil || err != nil {
		t.Errorf("a foreign ticket: %v, %v; want it ignored", ss, err)
	}
	shutdownWithin(t, u, 5*time.Second)
}

func TestReadTicketKeysBadInput(t *testing.T) {
	for _, n := range []int{1, 31, 33, 32*maxTicketKeys + 32} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(make([]byte, n))
		w.Close()
		if _, err := readTicketKeys(r); err == nil {
			t.Errorf("%d bytes of keys read without an error", n)
		}
		r.Close()
	}
}
