package upgrader

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"

	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testCert writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their paths and the parsed pair.
func testCert(t *testing.T, dir string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

// protoHandler answers with the protocol and whether the request came over
// TLS.
func protoHandler(w http.ResponseWriter, r *http.Request) {
	tlsOn := "plain"
	if r.TLS != nil {
		tlsOn = "tls"
	}
	io.WriteString(w, r.Proto+" "+tlsOn)
}

// h2Client is Go's HTTP/2 client over TLS, trusting any certificate.
func h2Client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}}
}

// shutdownWithin runs Shutdown with a deadline of limit and fails the test
// if the drain needed the deadline: then a connection held it.
func shutdownWithin(t *testing.T, u *Upgrader, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	if err := u.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after %v: %v (a quiet connection held the drain to its deadline)", time.Since(start), err)
	}
}

// listenForTest returns an Upgrader with an idle grace of 100 ms and a
// listener from it.
func listenForTest(t *testing.T) (*Upgrader, net.Listener) {
	t.Helper()
	u, _ := newTestUpgrader(t, Options{IdleGrace: 100 * time.Millisecond})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return u, ln
}

// dialForTest connects to addr, over TLS offering proto if overTLS, and
// closes the connection when the test ends.
func dialForTest(t *testing.T, addr string, overTLS bool, proto string) net.Conn {
	t.Helper()
	if overTLS {
		return idleTLSConn(t, addr, proto)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// idleTLSConn completes a TLS handshake and then sends nothing, as an
// `openssl s_client` left open does.
func idleTLSConn(t *testing.T, addr string, protos ...string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: protos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDrainUserTLSListener serves on a listener the user wrapped with
// tls.NewListener. Handlers must see r.TLS, HTTP/2 must be negotiated by
// ALPN, and an idle TLS connection must not hold the drain.
func TestDrainUserTLSListener(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, ln := listenForTest(t)
	_, _, pair := testCert(t, t.TempDir())
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2", "http/1.1"}}
	u.Serve(&http.Server{Handler: http.HandlerFunc(protoHandler)}, tls.NewListener(ln, cfg))
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String() + "/"
	c := h2Client()
	defer c.CloseIdleConnections()
	got, err := get(c, url)
	if err != nil {
		t.Fatal(err)
	}
	if got != "HTTP/2.0 tls" {
		t.Errorf("handler saw %q, want %q", got, "HTTP/2.0 tls")
	}
	idleTLSConn(t, ln.Addr().String())
	shutdownWithin(t, u, 5*time.Second)
}

// h2Frame is one HTTP/2 frame's header.
type h2Frame struct {
	typ, flags byte
	stream     uint32
}

const (
	h2FrameSettings = 0x4
	h2FrameGoAway   = 0x7
)

// h2Handshake sends the client preface and an empty SETTINGS frame, as any
// HTTP/2 client does first, and acknowledges the server's settings.
func h2Handshake(t *testing.T, c net.Conn) {
	t.Helper()
	msg := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	msg = append(msg, 0, 0, 0, h2FrameSettings, 0, 0, 0, 0, 0)
	msg = append(msg, 0, 0, 0, h2FrameSettings, 1, 0, 0, 0, 0) // ACK
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
}

// readH2Frames reads frames from c until it ends and returns them.
func readH2Frames(c net.Conn) []h2Frame {
	var frames []h2Frame
	r := bufio.NewReader(c)
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return frames
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return frames
		}
		frames = append(frames, h2Frame{typ: hdr[3], flags: hdr[4], stream: binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff})
	}
}

func sawGoAway(frames []h2Frame) bool {
	for _, f := range frames {
		if f.typ == h2FrameGoAway {
			return true
		}
	}
	return false
}

// TestDrainH2GoAway keeps an idle HTTP/2 connection open, over TLS and in
// clear text (h2c), through a drain: the server must say GOAWAY before it
// closes the connection, and the drain must not wait for the deadline.
func TestDrainH2GoAway(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2", true}, {"h2c", false}} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			u, ln := listenForTest(t)
			var protos http.Protocols
			protos.SetHTTP1(true)
			protos.SetHTTP2(true)
			protos.SetUnencryptedHTTP2(true)
			srv := &http.Server{Handler: http.HandlerFunc(protoHandler), Protocols: &protos}
			addr := ln.Addr().String()
			if tc.tls {
				_, _, pair := testCert(t, t.TempDir())
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
			}
			u.Serve(srv, ln)
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			c := dialForTest(t, addr, tc.tls, "h2")
			h2Handshake(t, c)
			frames := make(chan []h2Frame, 1)
			go func() { frames <- readH2Frames(c) }()
			// The server's SETTINGS are answered before the drain, so
			// the connection is up and idle when it begins.
			time.Sleep(50 * time.Millisecond)
			shutdownWithin(t, u, 5*time.Second)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got := <-frames; !sawGoAway(got) {
				t.Errorf("connection closed without a GOAWAY; frames %v", got)
			}
		})
	}
}

// pipeline writes the requests in one write and returns a reader for the
// responses.
func pipeline(t *testing.T, c net.Conn, paths ...string) *bufio.Reader {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		b.WriteString("GET " + p + " HTTP/1.1\r\nHost: test\r\n\r\n")
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(c)
}

// readReplies reads up to n responses and returns how many came with
// status 200, and whether the last one read said Connection: close.
func readReplies(r *bufio.Reader, n int) (ok int, closed bool, err error) {
	for range n {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return ok, closed, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			ok++
		}
		closed = resp.Close
	}
	return ok, closed, nil
}

// TestDrainPipelined sends four pipelined requests while a drain begins:
// all four were received, so all four must be answered before the
// connection closes.
func TestDrainPipelined(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"clear", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			u, ln := listenForTest(t)
			addr := ln.Addr().String()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			mux := http.NewServeMux()
			mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release
				io.WriteString(w, "slow")
			})
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
			srv := &http.Server{Handler: mux}
			if tc.tls {
				cf, kf, _ := testCert(t, t.TempDir())
				if err := serveTLSForTest(u, srv, ln, cf, kf); err != nil {
					t.Fatal(err)
				}
			} else {
				u.Serve(srv, ln)
			}
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			// Warm the connection up with a pipelined pair, as a
			// pipelining client's connection is when a drain begins.
			c := dialForTest(t, addr, tc.tls, "http/1.1")
			r := pipeline(t, c, "/", "/")
			if ok, _, err := readReplies(r, 2); ok != 2 {
				t.Fatalf("before the drain: %d of 2 answered: %v", ok, err)
			}
			if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"+
				strings.Repeat("GET / HTTP/1.1\r\nHost: test\r\n\r\n", 3)); err != nil {
				t.Fatal(err)
			}
			<-entered
			drained := make(chan error, 1)
			go func() { drained <- u.Shutdown(context.Background()) }()
			waitRefused(t, addr)
			close(release)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			ok, closed, err := readReplies(r, 4)
			if ok != 4 {
				t.Errorf("%d of 4 pipelined requests answered: %v", ok, err)
			}
			switch {
			case ok < 4:
			case !tc.tls && !closed:
				// In clear text the requests received are counted:
				// the last one's reply closes.
				t.Errorf("the last reply of the drain does not close the connection")
			case !closed:
				// Over TLS they cannot be: the connection of a
				// client seen pipelining is closed once idle.
				if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
					t.Errorf("after the replies: %v, want the server's close (EOF)", err)
				}
			}
			c.Close()
			select {
			case err := <-drained:
				if err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("drain did not end")
			}
		})
	}
}

// hidingListener wraps every connection in a type of its own that hides
// the socket, as some users' listeners (metrics, proxies) do.
type hidingListener struct{ net.Listener }

type hidingConn struct{ net.Conn }

func (l hidingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hidingConn{c}, nil
}

// TestDrainHiddenSocket serves on a listener whose connections hide their
// socket: an idle keep-alive connection must still be closed after the
// grace, not held to the deadline.
func TestDrainHiddenSocket(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, ln := listenForTest(t)
	u.Serve(&http.Server{Handler: http.HandlerFunc(protoHandler)}, hidingListener{ln})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if got, err := get(c, "http://"+ln.Addr().String()+"/"); err != nil || got != "HTTP/1.1 plain" {
		t.Fatalf("GET: %q, %v", got, err)
	}
	shutdownWithin(t, u, 5*time.Second)
}
