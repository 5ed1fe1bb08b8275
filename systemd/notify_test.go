//go:build linux

package systemd_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/systemdtest"
)

// newManager is systemdtest.NewAbstractManager if abstract, else
// systemdtest.NewManager.
func newManager(t *testing.T, abstract bool) *systemdtest.Manager {
	t.Helper()
	if abstract {
		return systemdtest.NewAbstractManager(t)
	}
	return systemdtest.NewManager(t)
}

func newNotifier(t *testing.T, addr string) *systemd.Notifier {
	t.Helper()
	n, err := systemd.NewNotifier(systemd.NotifierOptions{Socket: addr})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNotifyMessages(t *testing.T) {
	tests := []struct {
		name string
		send func(*systemd.Notifier) (bool, error)
		want string
	}{
		{"ready", (*systemd.Notifier).Ready, "READY=1"},
		{"stopping", (*systemd.Notifier).Stopping, "STOPPING=1"},
		{"watchdog", (*systemd.Notifier).Watchdog, "WATCHDOG=1"},
		{"status", func(n *systemd.Notifier) (bool, error) { return n.Status("serving: 3 conns = ok") }, "STATUS=serving: 3 conns = ok"},
		{"mainpid", func(n *systemd.Notifier) (bool, error) { return n.MainPID(4242) }, "MAINPID=4242"},
		{"errno", func(n *systemd.Notifier) (bool, error) { return n.Errno(syscall.EADDRINUSE) }, "ERRNO=98"},
		{"extend timeout", func(n *systemd.Notifier) (bool, error) { return n.ExtendTimeout(1500 * time.Millisecond) }, "EXTEND_TIMEOUT_USEC=1500000"},
		{"extend timeout rounds up", func(n *systemd.Notifier) (bool, error) { return n.ExtendTimeout(time.Nanosecond) }, "EXTEND_TIMEOUT_USEC=1"},
		{"fdstore remove", func(n *systemd.Notifier) (bool, error) { return n.RemoveFDs("web") }, "FDSTOREREMOVE=1\nFDNAME=web"},
		{"handover in one datagram", func(n *systemd.Notifier) (bool, error) {
			return n.Notify(systemd.MainPID(77), systemd.NotifyReady, systemd.Status("gen 2"))
		}, "MAINPID=77\nREADY=1\nSTATUS=gen 2"},
		{"empty status", func(n *systemd.Notifier) (bool, error) { return n.Status("") }, "STATUS="},
	}
	for _, abstract := range []bool{false, true} {
		m := newManager(t, abstract)
		n := m.Notifier(t)
		for _, tt := range tests {
			t.Run(tt.name+"/abstract="+strconv.FormatBool(abstract), func(t *testing.T) {
				sent, err := tt.send(n)
				if err != nil || !sent {
					t.Fatalf("send = %v, %v; want true, nil", sent, err)
				}
				msg := m.Recv(t)
				if msg.Data != tt.want {
					t.Errorf("datagram %q, want %q", msg.Data, tt.want)
				}
				if len(msg.FDs) != 0 {
					t.Errorf("got %d descriptors, want none", len(msg.FDs))
				}
				// systemd checks NotifyAccess= against these, so they must be ours
				if msg.Cred == nil || int(msg.Cred.Pid) != os.Getpid() || int(msg.Cred.Uid) != os.Getuid() {
					t.Errorf("credentials %+v, want pid %d uid %d", msg.Cred, os.Getpid(), os.Getuid())
				}
				m.ExpectNothing(t)
			})
		}
	}
}

func TestNotifyFromEnvironment(t *testing.T) {
	m := systemdtest.NewAbstractManager(t)
	t.Setenv(systemd.EnvNotifySocket, m.Socket)
	sent, err := systemd.Notify(systemd.NotifyReady, systemd.Status("up"))
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if msg := m.Recv(t); msg.Data != "READY=1\nSTATUS=up" {
		t.Errorf("datagram %q", msg.Data)
	}
	if os.Getenv(systemd.EnvNotifySocket) != m.Socket {
		t.Error("Notify removed NOTIFY_SOCKET; successors could not notify")
	}
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	m := systemdtest.NewManager(t)
	n := m.Notifier(t)
	before := monotonicUSec(t)
	if sent, err := n.Reloading(); err != nil || !sent {
		t.Fatalf("Reloading = %v, %v", sent, err)
	}
	after := monotonicUSec(t)
	msg := m.Recv(t)
	rest, ok := strings.CutPrefix(msg.Data, "RELOADING=1\nMONOTONIC_USEC=")
	if !ok {
		t.Fatalf("datagram %q", msg.Data)
	}
	ts, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || ts < before || ts > after {
		t.Fatalf("MONOTONIC_USEC=%s not within [%d, %d] (CLOCK_MONOTONIC)", rest, before, after)
	}
}

func monotonicUSec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestNotifyNotUnderSystemd(t *testing.T) {
	t.Setenv(systemd.EnvNotifySocket, "")
	os.Unsetenv(systemd.EnvNotifySocket)
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var zero systemd.Notifier
	var nilNotifier *systemd.Notifier
	for name, n := range map[string]*systemd.Notifier{"from env": n, "zero": &zero, "nil": nilNotifier} {
		if n.Enabled() || n.Socket() != "" {
			t.Errorf("%s: enabled without NOTIFY_SOCKET", name)
		}
		for _, send := range []func() (bool, error){
			n.Ready, n.Stopping, n.Reloading, n.Watchdog,
			func() (bool, error) { return n.MainPID(1) },
			func() (bool, error) { return n.RemoveFDs("x") },
			func() (bool, error) { return n.StoreFDs("x", os.Stdin) },
		} {
			if sent, err := send(); sent || err != nil {
				t.Errorf("%s: send = %v, %v; want false, nil", name, sent, err)
			}
		}
	}
	if sent, err := systemd.Notify(systemd.NotifyReady); sent || err != nil {
		t.Errorf("Notify = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyRejectsInvalidMessages(t *testing.T) {
	long := strings.Repeat("x", systemd.MaxMessageBytes)
	tests := []struct {
		name string
		send func(*systemd.Notifier) (bool, error)
	}{
		{"newline in status", func(n *systemd.Notifier) (bool, error) { return n.Status("a\nMAINPID=1") }},
		{"NUL in status", func(n *systemd.Notifier) (bool, error) { return n.Status("a\x00b") }},
		{"not an assignment", func(n *systemd.Notifier) (bool, error) { return n.Notify("READY") }},
		{"lower-case key", func(n *systemd.Notifier) (bool, error) { return n.Notify("ready=1") }},
		{"empty key", func(n *systemd.Notifier) (bool, error) { return n.Notify("=1") }},
		{"nothing", func(n *systemd.Notifier) (bool, error) { return n.Notify() }},
		{"too long", func(n *systemd.Notifier) (bool, error) { return n.Status(long) }},
		{"too many fds", func(n *systemd.Notifier) (bool, error) {
			return n.NotifyWithFDs(make([]int, systemd.MaxMessageFDs+1), systemd.NotifyFDStore, systemd.FDName("x"))
		}},
		{"mainpid 0", func(n *systemd.Notifier) (bool, error) { return n.MainPID(0) }},
		{"extend by 0", func(n *systemd.Notifier) (bool, error) { return n.ExtendTimeout(0) }},
		{"fdname with colon", func(n *systemd.Notifier) (bool, error) { return n.RemoveFDs("a:b") }},
		{"fdname empty", func(n *systemd.Notifier) (bool, error) { return n.RemoveFDs("") }},
		{"fdname control char", func(n *systemd.Notifier) (bool, error) { return n.RemoveFDs("a\tb") }},
		{"fdname too long", func(n *systemd.Notifier) (bool, error) { return n.RemoveFDs(strings.Repeat("n", 256)) }},
		{"fdstore without fds", func(n *systemd.Notifier) (bool, error) { return n.StoreFDs("x") }},
	}
	m := systemdtest.NewManager(t)
	enabled := m.Notifier(t)
	var disabled systemd.Notifier
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// invalid is invalid with or without systemd, so that tests
			// run outside systemd catch it
			for _, n := range []*systemd.Notifier{enabled, &disabled} {
				sent, err := tt.send(n)
				if sent || !errors.Is(err, systemd.ErrInvalidMessage) {
					t.Errorf("enabled=%v: send = %v, %v; want ErrInvalidMessage", n.Enabled(), sent, err)
				}
			}
			m.ExpectNothing(t)
		})
	}
	// the longest message systemd accepts still goes through
	if sent, err := enabled.Status(long[:systemd.MaxMessageBytes-len("STATUS=")]); !sent || err != nil {
		t.Fatalf("max-size status = %v, %v", sent, err)
	}
	if msg := m.Recv(t); len(msg.Data) != systemd.MaxMessageBytes {
		t.Errorf("received %d bytes, want %d", len(msg.Data), systemd.MaxMessageBytes)
	}
}

func TestNewNotifierRejectsBadAddress(t *testing.T) {
	for _, addr := range []string{"relative/path", "@", "/" + strings.Repeat("p", 107), "vsock:2:1234"} {
		if _, err := systemd.NewNotifier(systemd.NotifierOptions{Socket: addr}); !errors.Is(err, systemd.ErrInvalidSocket) {
			t.Errorf("NewNotifier(%q) = %v, want ErrInvalidSocket", addr, err)
		}
	}
}

func TestNotifierEnvironment(t *testing.T) {
	tests := []struct {
		name     string
		unset    bool
		wantKept bool
	}{
		{"default keeps NOTIFY_SOCKET for successors", false, true},
		{"UnsetEnvironment removes it", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := systemdtest.NewManager(t)
			t.Setenv(systemd.EnvNotifySocket, m.Socket)
			n, err := systemd.NewNotifier(systemd.NotifierOptions{UnsetEnvironment: tt.unset})
			if err != nil {
				t.Fatal(err)
			}
			if _, kept := os.LookupEnv(systemd.EnvNotifySocket); kept != tt.wantKept {
				t.Errorf("NOTIFY_SOCKET kept = %v, want %v", kept, tt.wantKept)
			}
			// the Notifier works either way
			if sent, err := n.Ready(); !sent || err != nil {
				t.Fatalf("Ready = %v, %v", sent, err)
			}
			if got := m.Recv(t).Data; got != systemd.NotifyReady {
				t.Errorf("datagram %q", got)
			}
		})
	}
}

func TestNotifyWithoutListener(t *testing.T) {
	n := newNotifier(t, t.TempDir()+"/no-such-socket")
	sent, err := n.Ready()
	if sent || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Ready = %v, %v; want false, ENOENT", sent, err)
	}
}

// TestStoreFDs checks the FDSTORE=1 datagram, that the descriptors arriving
// by SCM_RIGHTS are the stored sockets and files, and that storing does not
// switch a listener to blocking mode (the (*os.File).Fd pitfall).
func TestStoreFDs(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run("abstract="+strconv.FormatBool(abstract), func(t *testing.T) {
			m := newManager(t, abstract)
			n := m.Notifier(t)

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			tcp := ln.(*net.TCPListener)

			sent, err := n.StoreFDs("web", tcp, r)
			if !sent || err != nil {
				t.Fatalf("StoreFDs = %v, %v", sent, err)
			}
			msg := m.Recv(t)
			if msg.Data != "FDSTORE=1\nFDNAME=web" {
				t.Errorf("datagram %q", msg.Data)
			}
			if len(msg.FDs) != 2 {
				t.Fatalf("got %d descriptors, want 2", len(msg.FDs))
			}
			for i, c := range []syscall.Conn{tcp, r} {
				if want, got := systemdtest.ConnFileID(t, c), systemdtest.FDFileID(t, msg.FDs[i]); want != got {
					t.Errorf("descriptor %d is %v, want %v", i, got, want)
				}
			}
			if flags := fdFlags(t, tcp); flags&unix.O_NONBLOCK == 0 {
				t.Error("listener is in blocking mode after StoreFDs")
			}
			// and it still serves through the runtime poller
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			tcp.SetDeadline(time.Now().Add(5 * time.Second))
			if a, err := ln.Accept(); err != nil {
				t.Fatalf("accept after StoreFDs: %v", err)
			} else {
				a.Close()
			}
		})
	}
}

func fdFlags(t *testing.T, c syscall.Conn) (flags int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags
}

// TestBarrier plays systemd's part: it receives BARRIER=1 with one pipe
// descriptor and closes it once "processed"; Barrier must return then, and
// not before.
func TestBarrier(t *testing.T) {
	m := systemdtest.NewAbstractManager(t)
	n := m.Notifier(t)
	done := make(chan error, 1)
	go func() {
		sent, err := n.Barrier(context.Background())
		if err == nil && !sent {
			err = errors.New("not sent")
		}
		done <- err
	}()
	msg := m.Recv(t)
	if msg.Data != systemd.NotifyBarrier || len(msg.FDs) != 1 {
		t.Fatalf("datagram %q with %d fds", msg.Data, len(msg.FDs))
	}
	// the manager's copy of the write end is the last one: while it is
	// open, Barrier waits
	select {
	case err := <-done:
		t.Fatalf("Barrier returned (%v) before the manager closed the pipe", err)
	default:
	}
	m.CloseFD(msg.FDs[0])
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Barrier did not return after the pipe was closed")
	}
}

func TestBarrierContext(t *testing.T) {
	m := systemdtest.NewManager(t)
	n := m.Notifier(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// the manager receives but never closes the pipe
	sent, err := n.Barrier(ctx)
	if !sent || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Barrier = %v, %v; want true, DeadlineExceeded", sent, err)
	}
	if msg := m.Recv(t); msg.Data != systemd.NotifyBarrier {
		t.Errorf("datagram %q", msg.Data)
	}
	var disabled systemd.Notifier
	if sent, err := disabled.Barrier(ctx); sent || err != nil {
		t.Errorf("disabled Barrier = %v, %v", sent, err)
	}
}
