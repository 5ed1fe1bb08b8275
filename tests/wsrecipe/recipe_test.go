package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
	"github.com/coder/websocket"
)

// wsClient echoes on one WebSocket connection after another, and counts
// how each ended.
type wsClient struct {
	restarts int             // connections closed with 1012
	pids     map[string]bool // the pids that answered
	errs     []string        // any other end, or a wrong reply
}

func (cl *wsClient) run(ctx context.Context, url string) {
	for ctx.Err() == nil {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			if ctx.Err() == nil {
				cl.errs = append(cl.errs, "dial: "+err.Error())
			}
			return
		}
		for ctx.Err() == nil {
			if err = c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
				break
			}
			var msg []byte
			if _, msg, err = c.Read(ctx); err != nil {
				break
			}
			pid, ok := strings.CutPrefix(string(msg), "ping ")
			if !ok {
				cl.errs = append(cl.errs, "reply "+string(msg))
			}
			cl.pids[pid] = true
			time.Sleep(5 * time.Millisecond)
		}
		switch {
		case ctx.Err() != nil:
		case websocket.CloseStatus(err) == websocket.StatusServiceRestart:
			cl.restarts++
		default:
			cl.errs = append(cl.errs, "connection ended: "+err.Error())
		}
		c.CloseNow()
	}
}

// TestWebSocketUpgrades keeps 4 WebSocket clients echoing through 10
// upgrades: each old process must close every connection with 1012, and
// the clients, reconnecting, must reach every new process, with no other
// error.
func TestWebSocketUpgrades(t *testing.T) {
	const upgrades, clients = 10, 4
	bin := filepath.Join(t.TempDir(), "wsrecipe")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	s := upgradertest.Start(t, bin, upgradertest.Options{PIDFile: "ws.pid",
		Args: []string{"-addr", "127.0.0.1:0", "-pidfile", "{dir}/ws.pid"}, Serving: "serving", Output: io.Discard})
	url := "ws" + strings.TrimPrefix(s.URL, "http") + "/"

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	cls := make([]*wsClient, clients)
	for i := range cls {
		cls[i] = &wsClient{pids: map[string]bool{}}
		wg.Go(func() { cls[i].run(ctx, url) })
	}
	for i := range upgrades {
		time.Sleep(100 * time.Millisecond)
		if _, err := s.Upgrade(t, 20*time.Second); err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	for i, cl := range cls {
		t.Logf("client %d: restarts=%d pids=%d errors=%q", i, cl.restarts, len(cl.pids), cl.errs)
		if len(cl.errs) != 0 {
			t.Errorf("client %d: %q", i, cl.errs)
		}
		if cl.restarts != upgrades {
			t.Errorf("client %d: %d connections closed with 1012, want %d", i, cl.restarts, upgrades)
		}
		if len(cl.pids) != upgrades+1 {
			t.Errorf("client %d: replies from %d processes, want %d", i, len(cl.pids), upgrades+1)
		}
	}
}
