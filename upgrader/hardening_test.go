package upgrader

// Regression tests for issue 13 (hardening), items 5, 10, 11 and 16, at the
// unit level: real sockets and files, tableflip stood in for.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
)

// TestFinalCountsOverMessageSize: what the old process counted after the
// capture reaches the new process whatever its size, here 3000 counters
// (about 150 KB of JSON, over the 64 KiB a handoff datagram holds).
func TestFinalCountsOverMessageSize(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, n := range []int{10, 3000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			old, ff := newTestUpgrader(t, Options{})
			if err := old.Ready(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := old.Upgrade(context.Background()); done <- err }()
			<-ff.started
			ff.result <- nil
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The new process's end of the handoff socket.
			child, parentEnd := newChild(t, goodEnv())
			defer child.Close()
			old.own.Close()
			old.own = parentEnd

			want := make(map[string]uint64, n)
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("test.counted.during.the.drain.by.the.old.process.%05d", i)
				want[name] = uint64(i + 1)
				old.Counters().Counter(name).Add(uint64(i + 1))
			}
			received := make(chan struct{})
			go func() {
				defer close(received)
				child.awaitFinal(child.parent)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := old.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			<-received
			got := child.Counters().Values()
			missing := 0
			for name, v := range want {
				if got[name] != v {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d of %d counters counted after the capture did not reach the new process", missing, n)
			}
		})
	}
}

// TestShutdownWritesStateFileAfterForcedDrain: a connection with half a
// request holds the drain until its deadline; the final state file is
// written all the same, with the state as it stood.
func TestShutdownWritesStateFileAfterForcedDrain(t *testing.T) {
	defer goleak.VerifyNone(t)
	file := filepath.Join(t.TempDir(), "state")
	v := struct{ N int }{N: 7}
	u, addr := stoppingServer(t, file, state.JSON("test.value", 1, &v, nil))
	c := halfRequest(t, addr)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := u.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a half-sent request: %v, want the deadline", err)
	}
	// The file also holds the upgrader's own sections.
	reg, _ := state.NewRegistry(state.Options{UnknownSections: state.IgnoreUnknown})
	var got struct{ N int }
	if err := reg.Register(state.JSON("test.value", 1, &got, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := state.ReadFile(file, reg); err != nil {
		t.Fatalf("the state file after a forced drain: %v", err)
	}
	if got.N != 7 {
		t.Fatalf("state file holds %+v, want N 7", got)
	}
}

// stoppingServer returns a ready Upgrader with state file file and the
// participants ps, serving HTTP on the address it returns, whose drain
// closes quiet connections after 20 ms.
func stoppingServer(t *testing.T, file string, ps ...state.Participant) (*Upgrader, string) {
	t.Helper()
	u, _ := newTestUpgrader(t, Options{StateFile: file, IdleGrace: 20 * time.Millisecond})
	for _, p := range ps {
		if err := u.State().Register(p); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Serve(&http.Server{}, ln)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	return u, ln.Addr().String()
}

// halfRequest connects to addr, has a first request answered (so that the
// server holds the connection) and sends half of a second one.
func halfRequest(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	return c
}

// controlStatus asks for the status on the control socket at path, through
// DialControl, which accepts a server of this user.
func controlStatus(t *testing.T, path string) {
	t.Helper()
	c, err := DialControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, `{"v":1,"cmd":"status"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatalf("status reply: %v", err)
	}
}

// TestControlSilentClientDoesNotHoldShutdown: a control client that
// connected and says nothing is cut off when the process stops; Shutdown
// does not wait for its request deadline (10 s).
func TestControlSilentClientDoesNotHoldShutdown(t *testing.T) {
	defer goleak.VerifyNone(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	u, _ := newTestUpgrader(t, Options{ControlSocket: sock})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// One accept loop takes connections in order: once the status is
	// answered, the silent client has been accepted.
	controlStatus(t, sock)
	done := make(chan error, 1)
	go func() { done <- u.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Shutdown still waiting for a silent control client after 5 s")
		<-done
	}
	// It was told why, and the connection is closed.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(silent)
	line, err := br.ReadBytes('\n')
	var r ControlReply
	if err != nil || json.Unmarshal(line, &r) != nil || r.Type != ReplyError || r.Code != CodeBusy {
		t.Fatalf("the silent client got %q, %v; want a busy error", line, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the reply: %v, want EOF", err)
	}
}

// TestControlPathRefused: a control path that is something other than a
// socket, or lies in a directory other users can write, is refused with an
// error and left as it was; a socket nobody answers on (left by a process
// that died) is replaced.
func TestControlPathRefused(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir, path string)
		ok      bool
	}{
		{name: "regular file", prepare: func(t *testing.T, dir, path string) {
			if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "empty directory", prepare: func(t *testing.T, dir, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink to a file", prepare: func(t *testing.T, dir, path string) {
			target := filepath.Join(dir, "target")
			if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "world-writable directory", prepare: func(t *testing.T, dir, path string) {
			if err := os.Chmod(dir, 0o1777); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "group-writable directory", prepare: func(t *testing.T, dir, path string) {
			if err := os.Chmod(dir, 0o770); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "stale socket", ok: true, prepare: func(t *testing.T, dir, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}},
		{name: "served", prepare: func(t *testing.T, dir, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}},
		{name: "free", ok: true, prepare: func(t *testing.T, dir, path string) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "control.sock")
			tt.prepare(t, dir, path)
			before, _ := os.Lstat(path)
			u, err := newUpgrader(newFakeFlip(), Options{ControlSocket: path}, "")
			if tt.ok {
				if err != nil {
					t.Fatalf("control socket at a %s: %v", tt.name, err)
				}
				defer u.Close()
				if err := u.Ready(); err != nil {
					t.Fatal(err)
				}
				controlStatus(t, path)
				return
			}
			if !errors.Is(err, ErrControlSocket) {
				if err == nil {
					u.Close()
				}
				t.Fatalf("control socket at a %s: %v, want ErrControlSocket", tt.name, err)
			}
			t.Logf("%s: %v", tt.name, err)
			after, _ := os.Lstat(path)
			switch {
			case before == nil && after != nil:
				t.Errorf("a refused control path was created: %v", after.Mode())
			case before != nil && (after == nil || !os.SameFile(before, after)):
				t.Errorf("the %s at the control path was replaced or removed", tt.name)
			}
		})
	}
}

// TestShutdownStateFileFailure: a final state file that cannot be written
// (its directory is gone) is Shutdown's error, ErrStateFile, also when the
// drain ran out its deadline first.
func TestShutdownStateFileFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, slow := range []bool{false, true} {
		t.Run(fmt.Sprintf("slow=%v", slow), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "gone")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			u, addr := stoppingServer(t, filepath.Join(dir, "state"))
			if slow {
				c := halfRequest(t, addr)
				defer c.Close()
			}
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := u.Shutdown(ctx)
			if !errors.Is(err, ErrStateFile) {
				t.Fatalf("Shutdown: %v, want ErrStateFile", err)
			}
			if slow != errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown: %v; the deadline is part of it only if the drain ran out", err)
			}
			t.Log(err)
		})
	}
}
