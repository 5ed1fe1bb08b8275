//go:build linux

package sdupgrade_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/sdupgrade"
	"github.com/batonhq/baton/systemd/systemdtest"
	"github.com/batonhq/baton/upgrader"
)

// fakeHost stands in for an upgrader.Upgrader: the test emits its events and
// looks at what the integration adopted and handed on.
type fakeHost struct {
	parent bool
	gen    int
	infos  []upgrader.ListenerInfo

	mu       sync.Mutex
	hooks    []func(upgrader.Event)
	added    map[string]*os.File // AddFile keeps a duplicate, as tableflip does
	inherit  map[string]*os.File // what File hands out, once
	adoption []adoption
}

type adoption struct {
	name string
	ln   net.Listener
}

func (h *fakeHost) OnEvent(f func(upgrader.Event)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks = append(h.hooks, f)
}

func (h *fakeHost) AdoptListener(name string, ln net.Listener) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.adoption = append(h.adoption, adoption{name, ln})
	return nil
}

func (h *fakeHost) AddFile(name string, f *os.File) error {
	dup, err := dupFile(f)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.added == nil {
		h.added = map[string]*os.File{}
	}
	if old := h.added[name]; old != nil {
		old.Close()
	}
	h.added[name] = dup
	return nil
}

func (h *fakeHost) File(name string) (*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.inherit[name]
	delete(h.inherit, name)
	return f, nil
}

func (h *fakeHost) HasParent() bool                    { return h.parent }
func (h *fakeHost) Generation() int                    { return h.gen }
func (h *fakeHost) Listeners() []upgrader.ListenerInfo { return h.infos }

// emit calls the hooks on the caller's goroutine, as the upgrader does.
func (h *fakeHost) emit(e upgrader.Event) {
	h.mu.Lock()
	hooks := append([]func(upgrader.Event){}, h.hooks...)
	h.mu.Unlock()
	for _, f := range hooks {
		f(e)
	}
}

// child returns the host of the process an upgrade starts: it inherits a
// duplicate of every file h added.
func (h *fakeHost) child(t *testing.T) *fakeHost {
	t.Helper()
	c := &fakeHost{parent: true, gen: h.gen + 1, inherit: map[string]*os.File{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, f := range h.added {
		dup, err := dupFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c.inherit[name] = dup
	}
	t.Cleanup(c.close)
	return c
}

func (h *fakeHost) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range []map[string]*os.File{h.added, h.inherit} {
		for _, f := range m {
			f.Close()
		}
	}
}

func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(dup), f.Name()), nil
}

func attachHost(t *testing.T, h *fakeHost, opts sdupgrade.AttachOptions) *sdupgrade.Integration {
	t.Helper()
	i, err := sdupgrade.AttachHost(h, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

// nextNotPing returns the next datagram that is not a watchdog ping.
func nextNotPing(t *testing.T, m *systemdtest.Manager) systemdtest.Message {
	t.Helper()
	for range 1000 {
		if msg := m.Recv(t); msg.Data != systemd.NotifyWatchdog {
			return msg
		}
	}
	t.Fatal("only watchdog pings")
	return systemdtest.Message{}
}

func ready(pid, gen int) string {
	return fmt.Sprintf("READY=1\nSTATUS=serving (generation %d, pid %d)", gen, pid)
}

// TestIntegrationSteps emits a first generation's events one by one and
// checks what systemd receives for each.
func TestIntegrationSteps(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := systemdtest.NewManager(t)
	served := systemdtest.Listen(t)
	systemdtest.Listen(t) // a listener the upgrader does not serve: not stored
	h := &fakeHost{infos: []upgrader.ListenerInfo{
		{Kind: "listener", Network: "tcp", Addr: served.Addr().String()},
		{Kind: "listener", Network: "unix", Addr: "/run/demo/control.sock"},
	}}
	t.Cleanup(h.close)
	attachHost(t, h, sdupgrade.AttachOptions{Notifier: m.Notifier(t), FDStore: sdupgrade.FDStoreOn})
	self := os.Getpid()
	joined := fmt.Errorf("%w\n%s", upgrader.ErrStartFailed, "exec: no such file")

	steps := []struct {
		event upgrader.Event
		want  []string // datagrams; "MONOTONIC_USEC=*" matches any number
	}{
		{upgrader.Event{Step: "ready", Pid: self}, []string{
			ready(self, 0),
			// the served TCP listener only: not the stray one, not the
			// Unix control socket
			"FDSTORE=1\nFDNAME=" + strings.ReplaceAll(served.Addr().String(), ":", "_"),
		}},
		{upgrader.Event{Step: "started"}, []string{"RELOADING=1\nMONOTONIC_USEC=*\nSTATUS=upgrading: starting the new process"}},
		{upgrader.Event{Step: "child-started", Pid: 4242}, nil},
		{upgrader.Event{Step: "state-sent", Bytes: 10}, nil},
		// a multi-line reason must not break the message
		{upgrader.Event{Step: "failed", Error: joined.Error()}, []string{
			"READY=1\nSTATUS=upgrade failed: " + upgrader.ErrStartFailed.Error() + "; exec: no such file"}},
		{upgrader.Event{Step: "stopping"}, []string{"STOPPING=1\nSTATUS=stopping: draining connections"}},
		// nothing after STOPPING=1
		{upgrader.Event{Step: "started"}, nil},
	}
	for _, st := range steps {
		h.emit(st.event)
		for _, want := range st.want {
			msg := m.Recv(t)
			if !matchLines(msg.Data, want) {
				t.Fatalf("after %+v: got %q, want %q", st.event, msg.Data, want)
			}
			if strings.HasPrefix(want, "FDSTORE=1") {
				if len(msg.FDs) != 1 || systemdtest.FDFileID(t, msg.FDs[0]) != systemdtest.ConnFileID(t, served.(*net.TCPListener)) {
					t.Errorf("FDSTORE=1 carries %d fds, want the served listener", len(msg.FDs))
				}
			}
		}
		m.ExpectNothing(t)
	}
}

// matchLines compares a datagram with want, in which a value "*" matches any
// number.
func matchLines(got, want string) bool {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	if len(g) != len(w) {
		return false
	}
	for k := range w {
		key, val, _ := strings.Cut(w[k], "=")
		if val == "*" {
			gk, gv, _ := strings.Cut(g[k], "=")
			if _, err := strconv.ParseUint(gv, 10, 64); gk != key || err != nil {
				return false
			}
			continue
		}
		if g[k] != w[k] {
			return false
		}
	}
	return true
}

// TestIntegrationHandover plays an upgrade with both generations in this
// process, each pinging the watchdog: the old one stops pinging before
// MAINPID=, waits for the barrier, and only then does the new one report
// ready and start pinging. systemd, under NotifyAccess=main, refuses
// anything the new process sends before MAINPID= names it, and anything the
// old one sends after.
func TestIntegrationHandover(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := systemdtest.NewManager(t)
	n := m.Notifier(t)
	wd, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: n, Timeout: time.Second, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	runWatchdog := func(i *sdupgrade.Integration) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i.RunWatchdog(ctx, wd)
		}()
	}
	self := os.Getpid()

	oldHost := &fakeHost{}
	t.Cleanup(oldHost.close)
	oldI := attachHost(t, oldHost, sdupgrade.AttachOptions{Notifier: n})
	runWatchdog(oldI)
	oldHost.emit(upgrader.Event{Step: "ready", Pid: self})
	if msg := m.Recv(t); msg.Data != ready(self, 0) {
		t.Fatalf("got %q, want READY=1", msg.Data)
	}
	if msg := m.Recv(t); msg.Data != systemd.NotifyWatchdog {
		t.Fatalf("got %q, want the old process's pings", msg.Data)
	}
	oldHost.emit(upgrader.Event{Step: "started"})
	if msg := nextNotPing(t, m); !strings.HasPrefix(msg.Data, systemd.NotifyReloading) {
		t.Fatalf("got %q, want RELOADING=1", msg.Data)
	}

	newHost := oldHost.child(t)
	newI := attachHost(t, newHost, sdupgrade.AttachOptions{Notifier: n})
	runWatchdog(newI)
	newHost.emit(upgrader.Event{Step: "ready", Pid: self})
	// the new process is ready but not yet the main one: it keeps quiet,
	// the old one keeps pinging
	for range 20 {
		if msg := m.Recv(t); msg.Data != systemd.NotifyWatchdog {
			t.Fatalf("got %q before the handover, want only the old process's pings", msg.Data)
		}
	}
	select {
	case <-newI.Main():
		t.Fatal("new process is the main one before the handover")
	default:
	}

	handedOver := make(chan struct{})
	go func() {
		defer close(handedOver)
		oldHost.emit(upgrader.Event{Step: "child-ready", Pid: 4242})
	}()
	if msg := nextNotPing(t, m); msg.Data != "MAINPID=4242\nSTATUS=handing over to pid 4242" {
		t.Fatalf("got %q, want MAINPID=", msg.Data)
	}
	// no ping between MAINPID= and the new process's READY=1: the old
	// process stopped before the handover, the new one starts after it
	barrier := m.Recv(t)
	if barrier.Data != systemd.NotifyBarrier || len(barrier.FDs) != 1 {
		t.Fatalf("got %q with %d fds, want BARRIER=1", barrier.Data, len(barrier.FDs))
	}
	select {
	case <-newI.Main():
		t.Fatal("new process became the main one before systemd processed MAINPID=")
	case <-time.After(50 * time.Millisecond):
	}
	m.CloseFD(barrier.FDs[0])
	if msg := m.Recv(t); msg.Data != ready(self, 1) {
		t.Fatalf("got %q, want the new process's READY=1", msg.Data)
	}
	if msg := m.Recv(t); msg.Data != systemd.NotifyWatchdog {
		t.Fatalf("got %q, want the new process's pings", msg.Data)
	}
	<-handedOver
	<-newI.Main()

	// the old process drains and stops: it says nothing more
	oldHost.emit(upgrader.Event{Step: "draining"})
	oldHost.emit(upgrader.Event{Step: "stopping"})
	newI.Close()
	cancel()
	wg.Wait()
	for {
		msg, ok := m.TryRecv(t, 0)
		if !ok {
			break
		}
		if msg.Data != systemd.NotifyWatchdog {
			t.Errorf("after the handover: %q", msg.Data)
		}
	}
}

// TestIntegrationNewProcessWithoutHandover covers the new processes that get
// no word from the old one: they claim MAINPID= themselves, which systemd
// accepts only with NotifyAccess=all.
func TestIntegrationNewProcessWithoutHandover(t *testing.T) {
	self := os.Getpid()
	tests := []struct {
		name    string
		inherit func(t *testing.T) *os.File // the handover pipe's read end; nil: none
		want    string
	}{
		{name: "previous generation without the integration", want: "MAINPID=" + strconv.Itoa(self) + "\n" + ready(self, 1)},
		{name: "previous generation closed the pipe without a word", inherit: func(t *testing.T) *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
			return r
		}, want: "MAINPID=" + strconv.Itoa(self) + "\n" + ready(self, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			m := systemdtest.NewManager(t)
			h := &fakeHost{parent: true, gen: 1, inherit: map[string]*os.File{}}
			t.Cleanup(h.close)
			if tt.inherit != nil {
				h.inherit["baton.systemd.handover"] = tt.inherit(t)
			}
			i := attachHost(t, h, sdupgrade.AttachOptions{Notifier: m.Notifier(t)})
			h.emit(upgrader.Event{Step: "ready", Pid: self})
			if msg := m.Recv(t); msg.Data != tt.want {
				t.Fatalf("got %q, want %q", msg.Data, tt.want)
			}
			<-i.Main()
			i.Close()
		})
	}
}

// TestIntegrationCloseEndsHandoverWait: a new process told to stop before
// the old one handed over must not hang on the pipe.
func TestIntegrationCloseEndsHandoverWait(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := systemdtest.NewManager(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h := &fakeHost{parent: true, gen: 1, inherit: map[string]*os.File{"baton.systemd.handover": r}}
	t.Cleanup(h.close)
	i := attachHost(t, h, sdupgrade.AttachOptions{Notifier: m.Notifier(t)})
	h.emit(upgrader.Event{Step: "ready", Pid: os.Getpid()})
	closed := make(chan struct{})
	go func() { defer close(closed); i.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the wait for the handover")
	}
	m.ExpectNothing(t)
	select {
	case <-i.Main():
		t.Error("closed before the handover, yet the main process")
	default:
	}
}

// TestIntegrationNotUnderSystemd: without NOTIFY_SOCKET nothing is sent,
// nothing waits, and the watchdog does not run.
func TestIntegrationNotUnderSystemd(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, parent := range []bool{false, true} {
		h := &fakeHost{parent: parent}
		i := attachHost(t, h, sdupgrade.AttachOptions{Notifier: &systemd.Notifier{}})
		for _, step := range []upgrader.Step{upgrader.StepReady, upgrader.StepStarted, upgrader.StepChildReady, upgrader.StepFailed, upgrader.StepStopping} {
			h.emit(upgrader.Event{Step: step, Pid: 4242})
		}
		<-i.Main()
		wd, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: &systemd.Notifier{}, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		i.RunWatchdog(context.Background(), wd) // returns at once
		if len(h.added) != 0 {
			t.Errorf("handover pipe created without systemd: %v", h.added)
		}
		i.Close()
	}
}

func TestFDStoreMode(t *testing.T) {
	tests := []struct {
		mode  sdupgrade.FDStoreMode
		env   string // "-" unset
		store bool
	}{
		{sdupgrade.FDStoreAuto, "-", false},
		{sdupgrade.FDStoreAuto, "0", false},
		{sdupgrade.FDStoreAuto, "16", true},
		{sdupgrade.FDStoreAuto, "lots", false},
		{sdupgrade.FDStoreOn, "-", true},
		{sdupgrade.FDStoreOff, "16", false},
	}
	ln := systemdtest.Listen(t)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("mode %d FDSTORE=%s", tt.mode, tt.env), func(t *testing.T) {
			t.Setenv(systemd.EnvFDStore, tt.env)
			if tt.env == "-" {
				os.Unsetenv(systemd.EnvFDStore)
			}
			m := systemdtest.NewManager(t)
			h := &fakeHost{infos: []upgrader.ListenerInfo{{Kind: "listener", Network: "tcp", Addr: ln.Addr().String()}}}
			attachHost(t, h, sdupgrade.AttachOptions{Notifier: m.Notifier(t), FDStore: tt.mode})
			h.emit(upgrader.Event{Step: "ready", Pid: os.Getpid()})
			m.Recv(t) // READY=1
			msg, stored := m.TryRecv(t, 100*time.Millisecond)
			if stored != tt.store || stored && !strings.HasPrefix(msg.Data, systemd.NotifyFDStore) {
				t.Errorf("stored %v (%q), want %v", stored, msg.Data, tt.store)
			}
		})
	}
}

// TestAttachAdoptsActivatedSockets runs the test binary as a service that
// systemd passed four descriptors: a listener named web, the same socket
// again (a .socket unit and the fd store both hold it), an unnamed listener
// and a datagram socket.
func TestAttachAdoptsActivatedSockets(t *testing.T) {
	web, other := systemdtest.Listen(t), systemdtest.Listen(t)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer udpFile.Close()
	rep := startHelper(t, []*os.File{systemdtest.ListenerFile(t, web), systemdtest.ListenerFile(t, web), systemdtest.ListenerFile(t, other), udpFile},
		"LISTEN_PID=self", "LISTEN_FDS=4", "LISTEN_FDNAMES=web:web:unknown:udp")
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	want := []struct {
		name string
		ln   net.Listener
	}{{"web", web}, {other.Addr().String(), other}}
	if len(rep.Files) != len(want) {
		t.Fatalf("adopted %+v, want web once and the unnamed listener by its address", rep.Files)
	}
	for k, w := range want {
		if f := rep.Files[k]; f.Name != w.name || f.Ino != systemdtest.ConnFileID(t, w.ln.(*net.TCPListener)).Ino {
			t.Errorf("adopted %d: %+v, want %q", k, f, w.name)
		}
	}
	if len(rep.Env) != 0 {
		t.Errorf("LISTEN_* left in the environment: %v", rep.Env)
	}
}
