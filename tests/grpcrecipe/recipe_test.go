package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// watcher keeps a Watch stream open, one after another, and counts how
// each ended.
type watcher struct {
	moved, unavailable int      // NOT_SERVING received; ended with Unavailable
	errs               []string // any other end
}

func (w *watcher) run(ctx context.Context, c healthpb.HealthClient) {
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		st, err := c.Watch(sctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		for err == nil {
			var resp *healthpb.HealthCheckResponse
			if resp, err = st.Recv(); err == nil && resp.Status == healthpb.HealthCheckResponse_NOT_SERVING {
				// The process is draining: watch the new one.
				w.moved++
				break
			}
		}
		cancel()
		switch {
		case ctx.Err() != nil:
		case err == nil:
		case status.Code(err) == codes.Unavailable:
			w.unavailable++
		default:
			w.errs = append(w.errs, err.Error())
		}
	}
}

// TestGRPCUpgrades runs unary Check calls from 4 clients and a Watch
// stream through 20 upgrades: no unary call may fail, and every stream
// must end with NOT_SERVING or a status the client retries.
func TestGRPCUpgrades(t *testing.T) {
	const upgrades = 20
	bin := filepath.Join(t.TempDir(), "grpcrecipe")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	s := upgradertest.Start(t, bin, upgradertest.Options{PIDFile: "grpc.pid",
		Args: []string{"-addr", "127.0.0.1:0", "-pidfile", "{dir}/grpc.pid"}, Serving: "serving", Output: io.Discard})
	addr := strings.TrimPrefix(s.URL, "http://")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)

	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg           sync.WaitGroup
		calls, fails atomic.Int64
		mu           sync.Mutex
		errs         []string
	)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
				ccancel()
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					fails.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	w := &watcher{}
	wg.Go(func() { w.run(ctx, c) })
	var exits []time.Duration
	for i := range upgrades {
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if _, err := s.Upgrade(t, 20*time.Second); err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
		exits = append(exits, time.Since(start).Round(time.Millisecond))
	}
	cancel()
	wg.Wait()
	t.Logf("unary: calls=%d failed=%d %q; watch: moved=%d unavailable=%d errors=%q; signal to old process gone: %v",
		calls.Load(), fails.Load(), errs, w.moved, w.unavailable, w.errs, exits)
	if fails.Load() != 0 || calls.Load() == 0 {
		t.Errorf("%d of %d unary calls failed: %q", fails.Load(), calls.Load(), errs)
	}
	if len(w.errs) != 0 {
		t.Errorf("watch streams ended with errors a client does not retry: %q", w.errs)
	}
	if w.moved+w.unavailable < upgrades {
		t.Errorf("%d watch streams ended for %d upgrades", w.moved+w.unavailable, upgrades)
	}
}
