//go:build linux

package systemdtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/systemd"
)

// DefaultRecvTimeout is how long Recv waits for a message.
const DefaultRecvTimeout = 5 * time.Second

// Manager is a service manager's notification socket. Create it with
// NewManager or NewAbstractManager; it is closed, with every descriptor it
// received and the test did not close, when the test ends. Its methods may
// be called from several goroutines, but only one may receive at a time.
type Manager struct {
	// Socket is the address to set NOTIFY_SOCKET or
	// systemd.NotifierOptions.Socket to.
	Socket string

	fd int

	mu       sync.Mutex
	received map[int]bool // descriptors received and not yet closed
}

// Message is one datagram as the manager received it.
type Message struct {
	// Data is the datagram's text: KEY=VALUE lines joined by "\n".
	Data string
	// FDs are the descriptors that came with it (SCM_RIGHTS), open in this
	// process until the test ends or Manager.CloseFD closes one.
	FDs []int
	// Cred is the sender's pid, uid and gid, which systemd checks
	// NotifyAccess= against; nil if the kernel attached none.
	Cred *unix.Ucred
}

// NewManager returns a Manager bound to a socket file in t.TempDir().
func NewManager(t testing.TB) *Manager {
	t.Helper()
	return newManager(t, filepath.Join(t.TempDir(), "notify"))
}

// NewAbstractManager returns a Manager bound to a random name in the
// abstract namespace ("@…"), as systemd's own socket is for units in a
// private mount namespace.
func NewAbstractManager(t testing.TB) *Manager {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	return newManager(t, "@baton-systemd-test/"+hex.EncodeToString(b[:]))
}

func newManager(t testing.TB, addr string) *Manager {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	m := &Manager{Socket: addr, fd: fd, received: make(map[int]bool)}
	t.Cleanup(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for fd := range m.received {
			unix.Close(fd)
		}
	})
	return m
}

// Notifier returns a systemd.Notifier that sends to m.
func (m *Manager) Notifier(t testing.TB) *systemd.Notifier {
	t.Helper()
	n, err := systemd.NewNotifier(systemd.NotifierOptions{Socket: m.Socket})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// CloseFD closes a received descriptor now, as systemd closes the pipe of a
// BARRIER=1 once it has processed it, and not again at the end of the test.
func (m *Manager) CloseFD(fd int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.received[fd] {
		delete(m.received, fd)
		unix.Close(fd)
	}
}

// Recv returns the next message, failing the test if none arrives within
// DefaultRecvTimeout.
func (m *Manager) Recv(t testing.TB) Message {
	t.Helper()
	msg, ok := m.TryRecv(t, DefaultRecvTimeout)
	if !ok {
		t.Fatalf("no notification within %v", DefaultRecvTimeout)
	}
	return msg
}

// TryRecv waits up to timeout for a message and reports whether one came;
// zero only looks at what is queued.
func (m *Manager) TryRecv(t testing.TB, timeout time.Duration) (Message, bool) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(m.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, int(timeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return Message{}, false
		}
		break
	}
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(4*300)+unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, flags, _, err := unix.Recvmsg(m.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		t.Fatalf("truncated message (flags %#x)", flags)
	}
	msg := Message{Data: string(buf[:n])}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for i := range cmsgs {
		c := &cmsgs[i]
		switch {
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(c)
			if err != nil {
				t.Fatal(err)
			}
			m.mu.Lock()
			for _, fd := range fds {
				m.received[fd] = true
			}
			m.mu.Unlock()
			msg.FDs = append(msg.FDs, fds...)
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(c)
			if err != nil {
				t.Fatal(err)
			}
			msg.Cred = cred
		}
	}
	return msg, true
}

// ExpectNothing fails the test if a message is queued.
func (m *Manager) ExpectNothing(t testing.TB) {
	t.Helper()
	if msg, ok := m.TryRecv(t, 0); ok {
		t.Fatalf("unexpected notification %q", msg.Data)
	}
}
