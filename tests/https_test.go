package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// The end-to-end tests of issue 15: baton-demo serving HTTPS with HTTP/2,
// h2c and server-sent events, through upgrades, with real clients.

// httpsUpgrades is how many upgrades each test goes through.
const httpsUpgrades = 10

// idleBound is how long an old process may outlive its upgrade while idle
// TLS and HTTP/2 connections are open to it: the idle grace (1 s), then
// for HTTP/2 a GOAWAY and a check (250 ms) before the close, and slack.
// The drain's deadline is 20 s, so a connection that held the drain would
// show.
const idleBound = 3 * time.Second

// selfSigned makes the README's self-signed certificate for 127.0.0.1 in
// dir, with the README's openssl command, and returns its files.
func selfSigned(t testing.TB, dir string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-days", "365", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
		"-keyout", key, "-out", cert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return cert, key
}

// startHTTPS starts baton-demo with HTTPS on a port of its own and h2c on
// the clear one, and returns it with its HTTPS address.
func startHTTPS(t testing.TB, args ...string) (*demotest.Proc, string) {
	t.Helper()
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	args = append([]string{"-drain", "20s", "-tls-cert", cert, "-tls-key", key, "-tls-addr", freeTCPAddr(t), "-h2c"}, args...)
	p := demotest.StartEnv(t, nil, demoV1, dir, args...)
	line, err := p.Logs.Wait(5*time.Second, upgradertest.Match{Msg: "serving", Pid: p.Pid(t)})
	if err != nil || line.Fields["tls_addr"] == "" {
		t.Fatalf("no HTTPS address in the serving line %q: %v", line.Raw, err)
	}
	return p, line.Fields["tls_addr"]
}

// freeTCPAddr returns a port on 127.0.0.1 that was free a moment ago, taken
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768
// and up here): the load of the other tests opens thousands of outgoing
// connections, and one of them could take a freed ephemeral port before
// the demo binds it (seen once: "is in use (-tls-addr)").
// The HTTPS listener cannot be on port 0 as well as the clear one: the
// upgrader names a handed-over listener by its address, so a second
// 127.0.0.1:0 is refused (ErrListenerTaken).
func freeTCPAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try another
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port between 20000 and 32000 on 127.0.0.1")
	return ""
}

// insecureTLS trusts the test's self-signed certificate. Each client
// needs its own: Go's HTTP/2 transport adds "h2" to the config's ALPN list,
// and an HTTP/1-only client sharing it would then be offered HTTP/2.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// goClient is Go's client for one kind of connection: "h2" (HTTP/2 over
// TLS), "h1-tls" (HTTP/1.1 over TLS), "h1" (HTTP/1.1 in clear text) or
// "h2c" (HTTP/2 in clear text, prior knowledge).
func goClient(kind string) *http.Client {
	tr := &http.Transport{TLSClientConfig: insecureTLS(), MaxIdleConnsPerHost: 16}
	var p http.Protocols
	switch kind {
	case "h2":
		p.SetHTTP2(true)
	case "h1", "h1-tls":
		p.SetHTTP1(true)
	case "h2c":
		p.SetUnencryptedHTTP2(true)
	}
	tr.Protocols = &p
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// protoLoad counts what Go's clients saw.
type protoLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	protos     map[string]int64 // replies by "proto tls"
}

func (l *protoLoad) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 5 {
		l.errs = append(l.errs, err.Error())
	}
}

// one sends a GET / or, every other time, a POST /echo, and checks the
// reply.
func (l *protoLoad) one(c *http.Client, base string, n int) {
	var resp *http.Response
	var err error
	body := "body-" + strconv.Itoa(n)
	if n%2 == 0 {
		resp, err = c.Get(base + "/")
	} else {
		resp, err = c.Post(base+"/echo", "text/plain", strings.NewReader(body))
	}
	if err != nil {
		l.fail(err)
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		l.fail(err)
	case resp.StatusCode != http.StatusOK:
		l.fail(fmt.Errorf("%s: status %d", resp.Request.URL.Path, resp.StatusCode))
	case n%2 == 1 && string(b) != body:
		l.fail(fmt.Errorf("echo returned %q, want %q", b, body))
	default:
		l.ok.Add(1)
		if n%2 == 0 {
			var root struct {
				Proto string `json:"proto"`
				TLS   bool   `json:"tls"`
			}
			if err := json.Unmarshal(b, &root); err == nil {
				l.mu.Lock()
				l.protos[root.Proto+" "+strconv.FormatBool(root.TLS)]++
				l.mu.Unlock()
			}
		}
	}
}

// run loops one until ctx is done, a request every 2 ms per worker.
func (l *protoLoad) run(ctx context.Context, c *http.Client, base string, workers int, wg *sync.WaitGroup) {
	for w := range workers {
		wg.Go(func() {
			for n := w; ctx.Err() == nil; n += workers {
				l.one(c, base, n)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
}

// idleConns opens, before an upgrade, the quiet connections that must not
// hold the old process: an `openssl s_client` that shook hands and waits,
// and a Go HTTP/2 connection over TLS and one in clear text, each idle
// after one request. It returns the s_client, which ends when the server
// closes its connection.
func idleConns(t *testing.T, tlsAddr, clearAddr string) (sclient *exec.Cmd, done <-chan error, closeIdle func()) {
	t.Helper()
	cmd := exec.Command("openssl", "s_client", "-connect", tlsAddr, "-quiet", "-alpn", "http/1.1")
	stdin, err := cmd.StdinPipe() // held open: s_client sends nothing
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The handshake is done once s_client has said what it verified.
	shook, scanned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		once := sync.OnceFunc(func() { close(shook) })
		for sc.Scan() {
			if strings.Contains(sc.Text(), "verify") {
				once()
			}
		}
		once()
	}()
	ch := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe: read it to its end first
		ch <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
	})
	var clients []*http.Client
	for kind, base := range map[string]string{"h2": "https://" + tlsAddr, "h2c": "http://" + clearAddr} {
		c := goClient(kind)
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("idle %s connection: %v", kind, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		clients = append(clients, c)
	}
	select {
	case <-shook:
	case <-time.After(5 * time.Second):
		t.Fatal("openssl s_client did not complete its handshake")
	}
	return cmd, ch, func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}
}

// TestHTTPSUpgrades runs Go's clients over HTTP/2 with TLS, HTTP/1.1 with
// TLS and h2c through 10 upgrades, with an idle openssl s_client and idle
// HTTP/2 connections open across each. Every request must succeed, every
// handler must see the protocol and TLS it came with, and every old
// process must exit soon after the idle grace, not at the drain deadline.
func TestHTTPSUpgrades(t *testing.T) {
	p, tlsAddr := startHTTPS(t)
	load := &protoLoad{protos: map[string]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := map[string]string{"h2": "https://" + tlsAddr, "h1-tls": "https://" + tlsAddr, "h2c": p.URL}
	for kind, base := range clients {
		c := goClient(kind)
		defer c.CloseIdleConnections()
		load.run(ctx, c, base, 4, &wg)
	}
	var exits []time.Duration
	for i := range httpsUpgrades {
		sclient, sdone, closeIdle := idleConns(t, tlsAddr, p.Addr)
		u := nextGenerationTimed(t, p, i, &exits)
		select {
		case err := <-sdone:
			t.Logf("upgrade %d: s_client ended (%v) as the old process %d closed its connection", i, err, u.OldPid)
		case <-time.After(idleBound):
			t.Errorf("upgrade %d: the idle s_client (pid %d) is still connected %v after the old process exited", i, sclient.Process.Pid, idleBound)
		}
		closeIdle()
	}
	cancel()
	wg.Wait()
	t.Logf("ok=%d failed=%d protos=%v old process exits after upgrade: %v", load.ok.Load(), load.failed.Load(), load.protos, exits)
	if load.failed.Load() != 0 || load.ok.Load() == 0 {
		t.Errorf("%d of %d requests failed: %q", load.failed.Load(), load.failed.Load()+load.ok.Load(), load.errs)
	}
	for _, want := range []string{"HTTP/2.0 true", "HTTP/1.1 true", "HTTP/2.0 false"} {
		if load.protos[want] == 0 {
			t.Errorf("no reply saw %q; saw %v", want, load.protos)
		}
	}
	for i, d := range exits {
		if d > idleBound {
			t.Errorf("upgrade %d: old process exited %v after the upgrade, want under %v: a quiet connection held the drain", i, d, idleBound)
		}
	}
}

// nextGenerationTimed is nextGeneration that also records how long the old
// process lived after the new one answered.
func nextGenerationTimed(t testing.TB, p *demotest.Proc, i int, exits *[]time.Duration) demotest.Upgrade {
	t.Helper()
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade %d failed: %s\n%s", i, u.Err, p.Logs.Tail(40))
	}
	start := time.Now()
	if err := upgradertest.WaitExit(u.OldPid, 30*time.Second); err != nil {
		t.Fatalf("upgrade %d: old process: %v", i, err)
	}
	*exits = append(*exits, time.Since(start).Round(time.Millisecond))
	return u
}

// TestCurlHTTPSUpgrades runs curl over HTTP/2 and HTTP/1.1 with TLS, each
// invocation asking for 20 URLs on one kept-alive connection, in loops
// through 10 upgrades: every invocation must exit 0 with every reply 200.
func TestCurlHTTPSUpgrades(t *testing.T) {
	p, tlsAddr := startHTTPS(t)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg                 sync.WaitGroup
		runs, bad, replies atomic.Int64
		mu                 sync.Mutex
		errs               []string
	)
	// Each URL with its own -o: curl applies one -o to one URL.
	urls := slices.Repeat([]string{"-o", "/dev/null", "https://" + tlsAddr + "/"}, 20)
	const perRun = 20
	for _, flag := range []string{"--http2", "--http1.1", "--http2", "--http1.1"} {
		wg.Go(func() {
			for ctx.Err() == nil {
				args := append([]string{"-sSk", flag, "-w", "%{http_code} %{http_version}\n"}, urls...)
				out, err := exec.Command("curl", args...).CombinedOutput()
				runs.Add(1)
				codes := strings.Fields(string(out))
				okCodes := 0
				for j := 0; j+1 < len(codes); j += 2 {
					if codes[j] == "200" {
						okCodes++
					}
				}
				replies.Add(int64(okCodes))
				if err != nil || okCodes != perRun {
					bad.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, fmt.Sprintf("curl %s: %v: %s", flag, err, out))
					}
					mu.Unlock()
				}
			}
		})
	}
	var exits []time.Duration
	for i := range httpsUpgrades {
		nextGenerationTimed(t, p, i, &exits)
	}
	cancel()
	wg.Wait()
	t.Logf("curl runs=%d replies=%d bad=%d old process exits: %v", runs.Load(), replies.Load(), bad.Load(), exits)
	if bad.Load() != 0 || runs.Load() == 0 {
		t.Errorf("%d of %d curl runs failed: %q", bad.Load(), runs.Load(), errs)
	}
}

// pipeliner is an HTTP/1.1 client that pipelines: it writes a burst of
// requests on a raw TCP connection, then reads the replies. It counts the
// requests sent on connections that ended before answering them.
type pipeliner struct {
	sent, answered, unanswered, conns atomic.Int64
}

// run pipelines bursts of burst GETs until ctx is done, reconnecting when
// the server closes (after a reply that says Connection: close).
func (pl *pipeliner) run(ctx context.Context, addr string, burst int) error {
	req := []byte(strings.Repeat("GET / HTTP/1.1\r\nHost: demo\r\n\r\n", burst))
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		pl.conns.Add(1)
		r := bufio.NewReader(c)
		for open := true; open && ctx.Err() == nil; {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				c.Close()
				return fmt.Errorf("write: %w", err)
			}
			pl.sent.Add(int64(burst))
			for k := range burst {
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					pl.unanswered.Add(int64(burst - k))
					c.Close()
					return fmt.Errorf("reply %d of %d: %w", k+1, burst, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					pl.answered.Add(1)
				}
				if resp.Close {
					// The server closes after this reply: the
					// requests after it in the burst are lost.
					pl.unanswered.Add(int64(burst - k - 1))
					open = false
					break
				}
			}
		}
		c.Close()
	}
	return nil
}

// TestPipeliningUpgrades pipelines bursts of 4 requests on 8 connections
// through 10 upgrades: every request sent must be answered.
func TestPipeliningUpgrades(t *testing.T) {
	p := demotest.Start(t, demoV1, "-drain", "20s")
	pl := &pipeliner{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 8)
	for range 8 {
		go func() { errc <- pl.run(ctx, p.Addr, 4) }()
	}
	var exits []time.Duration
	for i := range httpsUpgrades {
		nextGenerationTimed(t, p, i, &exits)
	}
	cancel()
	for range 8 {
		if err := <-errc; err != nil {
			t.Errorf("pipelining client: %v", err)
		}
	}
	t.Logf("pipelined: sent=%d answered=%d unanswered=%d connections=%d old process exits: %v",
		pl.sent.Load(), pl.answered.Load(), pl.unanswered.Load(), pl.conns.Load(), exits)
	if pl.unanswered.Load() != 0 || pl.answered.Load() != pl.sent.Load() {
		t.Errorf("%d of %d pipelined requests unanswered", pl.sent.Load()-pl.answered.Load(), pl.sent.Load())
	}
	if pl.conns.Load() < 8+httpsUpgrades {
		t.Errorf("only %d connections: the drains did not close the pipelining ones", pl.conns.Load())
	}
}

// TestEventsUpgrades reads GET /events over HTTP/2 with TLS and over
// HTTP/1.1 in clear text through 10 upgrades: every stream must end
// cleanly with the old process's "bye" event, and the client, reconnecting,
// must reach the new one.
func TestEventsUpgrades(t *testing.T) {
	p, tlsAddr := startHTTPS(t, "-event-interval", "100ms")
	type stream struct {
		name   string
		client *http.Client
		url    string
	}
	streams := []stream{
		{"h2", goClient("h2"), "https://" + tlsAddr + "/events"},
		{"h1", &http.Client{}, p.URL + "/events"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		byes  int
		pids  map[string]bool
		errs  []string
		proto string
	}
	results := make([]*result, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		res := &result{pids: map[string]bool{}}
		results[i] = res
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", s.url, nil)
				resp, err := s.client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						res.errs = append(res.errs, err.Error())
					}
					return
				}
				res.proto = resp.Proto
				ev, bye := "", false
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					line := sc.Text()
					switch {
					case strings.HasPrefix(line, "event: "):
						ev = strings.TrimPrefix(line, "event: ")
					case strings.HasPrefix(line, "data: "):
						res.pids[strings.TrimPrefix(line, "data: ")] = true
						if ev == "bye" {
							bye = true
						}
					}
				}
				resp.Body.Close()
				if ctx.Err() != nil {
					return
				}
				if err := sc.Err(); err != nil {
					res.errs = append(res.errs, "stream cut: "+err.Error())
				} else if !bye {
					res.errs = append(res.errs, "stream ended without a bye event")
				} else {
					res.byes++
				}
			}
		})
	}
	var exits []time.Duration
	for i := range httpsUpgrades {
		time.Sleep(300 * time.Millisecond) // the streams reconnect and tick
		nextGenerationTimed(t, p, i, &exits)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	for i, res := range results {
		t.Logf("%s (%s): byes=%d pids=%d errors=%q", streams[i].name, res.proto, res.byes, len(res.pids), res.errs)
		if len(res.errs) != 0 {
			t.Errorf("%s: %q", streams[i].name, res.errs)
		}
		// Over HTTP/1.1 a stream that began before the drain cannot
		// close its connection when it ends (its headers are out), so
		// the client's reconnection may reuse it and get, from the old
		// process, an immediate "bye" before it reaches the new one.
		if res.byes < httpsUpgrades {
			t.Errorf("%s: %d streams ended with bye, want %d or more", streams[i].name, res.byes, httpsUpgrades)
		}
		if len(res.pids) != httpsUpgrades+1 {
			t.Errorf("%s: events from %d processes, want %d", streams[i].name, len(res.pids), httpsUpgrades+1)
		}
	}
	t.Logf("old process exits: %v", exits)
	for i, d := range exits {
		if d > idleBound {
			t.Errorf("upgrade %d: old process exited %v after the upgrade: a stream held the drain", i, d)
		}
	}
}

// TestH2loadUpgrades runs h2load (nghttp2-client) through 10 upgrades, in
// bounded runs one after the other, HTTP/1.1 with 4 requests pipelined per
// connection, in clear text and over TLS. No request may fail.
//
// h2load's HTTP/2 modes are not asserted here: h2load does not open a new
// connection after a GOAWAY, so it counts the requests it then never sends
// as failed, and it does not retry a stream the GOAWAY refused (one it
// sent after the server named its last stream), which the protocol makes
// safe to retry and Go's client does (TestHTTPSUpgrades).
func TestH2loadUpgrades(t *testing.T) {
	tool, err := exec.LookPath("h2load")
	if err != nil {
		t.Fatalf("h2load is needed (Debian: apt-get install nghttp2-client; .ci/run installs it): %v", err)
	}
	p, tlsAddr := startHTTPS(t)
	modes := map[string][]string{
		"h1-pipelined":     {"--h1", "-m", "4", p.URL + "/"},
		"h1-pipelined-tls": {"--h1", "-m", "4", "https://" + tlsAddr + "/"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	type tally struct{ runs, total, succeeded, failed int }
	var (
		mu      sync.Mutex
		tallies = map[string]*tally{}
		errs    []string
		wg      sync.WaitGroup
	)
	for name, args := range modes {
		tl := &tally{} // the map is written here while earlier goroutines run
		tallies[name] = tl
		wg.Go(func() {
			for ctx.Err() == nil {
				out, err := exec.Command(tool, append([]string{"-c", "4", "-n", "2000"}, args...)...).CombinedOutput()
				total, ok, failed, perr := parseH2load(string(out))
				mu.Lock()
				tl.runs++
				tl.total += total
				tl.succeeded += ok
				tl.failed += failed
				if (err != nil || perr != nil || ok != total) && len(errs) < 5 {
					errs = append(errs, fmt.Sprintf("%s: %v %v\n%s", name, err, perr, out))
				}
				mu.Unlock()
			}
		})
	}
	var exits []time.Duration
	for i := range httpsUpgrades {
		time.Sleep(200 * time.Millisecond)
		nextGenerationTimed(t, p, i, &exits)
	}
	cancel()
	wg.Wait()
	for name, tl := range tallies {
		t.Logf("%s: runs=%d requests=%d succeeded=%d failed=%d", name, tl.runs, tl.total, tl.succeeded, tl.failed)
		if tl.runs == 0 || tl.failed != 0 || tl.succeeded != tl.total {
			t.Errorf("%s: %d of %d requests did not succeed", name, tl.total-tl.succeeded, tl.total)
		}
	}
	t.Logf("old process exits: %v", exits)
	if len(errs) > 0 {
		t.Errorf("h2load runs with failures: %s", strings.Join(errs, "\n"))
	}
}

// parseH2load reads h2load's "requests: N total, N started, N done, N
// succeeded, N failed, N errored, N timeout" line.
func parseH2load(out string) (total, succeeded, failed int, err error) {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "requests: ") {
			continue
		}
		var started, done, errored, timeout int
		_, err = fmt.Sscanf(line, "requests: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout",
			&total, &started, &done, &succeeded, &failed, &errored, &timeout)
		return total, succeeded, failed + errored + timeout, err
	}
	return 0, 0, 0, fmt.Errorf("no requests line in h2load's output")
}

// TestTLSResumptionUpgrades measures TLS session resumption across 10
// upgrades: before each, a client connects to the old process and keeps
// the session ticket it issued; after it, the client connects again and
// reaches the new process, which must resume that session. Go's client
// (a session cache) and `openssl s_client -sess_out/-sess_in` both.
func TestTLSResumptionUpgrades(t *testing.T) {
	p, tlsAddr := startHTTPS(t)
	cache := tls.NewLRUClientSessionCache(4)
	goGet := func() (pid string, resumed bool) {
		t.Helper()
		cfg := insecureTLS()
		cfg.ClientSessionCache = cache
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + tlsAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Pid"), resp.TLS.DidResume
	}
	sess := filepath.Join(t.TempDir(), "session.pem")
	openssl := func(flag string) (reused bool) {
		t.Helper()
		cmd := exec.Command("openssl", "s_client", "-connect", tlsAddr, "-alpn", "http/1.1", "-ign_eof", flag, sess)
		cmd.Stdin = strings.NewReader("GET /healthz HTTP/1.0\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl s_client %s: %v\n%s", flag, err, out)
		}
		return strings.Contains(string(out), "Reused, ")
	}
	var goResumed, sslResumed int
	for i := range httpsUpgrades {
		oldPid, _ := goGet() // a ticket from the old process
		openssl("-sess_out")
		u := p.Upgrade(t)
		if u.Err != "" {
			t.Fatalf("upgrade %d failed: %s", i, u.Err)
		}
		pid, resumed := goGet()
		if pid == oldPid || pid != strconv.Itoa(u.NewPid) {
			t.Fatalf("upgrade %d: answered by %s, want the new process %d", i, pid, u.NewPid)
		}
		if resumed {
			goResumed++
		}
		if openssl("-sess_in") {
			sslResumed++
		}
		if err := upgradertest.WaitExit(u.OldPid, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("sessions the old process issued, resumed by the new one: Go %d of %d, openssl %d of %d",
		goResumed, httpsUpgrades, sslResumed, httpsUpgrades)
	if goResumed != httpsUpgrades || sslResumed != httpsUpgrades {
		t.Errorf("resumed across upgrades: Go %d, openssl %d, of %d", goResumed, sslResumed, httpsUpgrades)
	}
}
