//go:build linux

package systemd_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeManager is the receiving end of a notification socket, set up as
// systemd sets up its own: an AF_UNIX datagram socket with SO_PASSCRED, so
// that every message arrives with the sender's credentials.
type fakeManager struct {
	fd   int
	addr string // as it goes into NOTIFY_SOCKET

	mu       sync.Mutex
	received map[int]bool // descriptors received and not yet closed
}

// message is one datagram as the manager sees it.
type message struct {
	data string
	fds  []int
	cred *unix.Ucred
}

func newFakeManager(t *testing.T, abstract bool) *fakeManager {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		var b [8]byte
		rand.Read(b[:])
		addr = "@baton-systemd-test/" + hex.EncodeToString(b[:])
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	m := &fakeManager{fd: fd, addr: addr, received: make(map[int]bool)}
	t.Cleanup(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for fd := range m.received {
			unix.Close(fd)
		}
	})
	return m
}

// closeFD closes a received descriptor now, as systemd closes the pipe of
// a BARRIER=1 once it has processed it, and not again at the end.
func (m *fakeManager) closeFD(fd int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.received[fd] {
		delete(m.received, fd)
		unix.Close(fd)
	}
}

// recv returns the next datagram, waiting at most 5 s. Received descriptors
// are closed at the end of the test, or by closeFD.
func (m *fakeManager) recv(t *testing.T) message {
	t.Helper()
	msg, ok := m.tryRecv(t, 5*time.Second)
	if !ok {
		t.Fatal("no notification within 5s")
	}
	return msg
}

// tryRecv waits up to timeout for a datagram; zero only looks at what is
// queued.
func (m *fakeManager) tryRecv(t *testing.T, timeout time.Duration) (message, bool) {
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
			return message{}, false
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
	msg := message{data: string(buf[:n])}
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
			msg.fds = append(msg.fds, fds...)
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(c)
			if err != nil {
				t.Fatal(err)
			}
			msg.cred = cred
		}
	}
	return msg, true
}

// expectNothing fails if a datagram is queued.
func (m *fakeManager) expectNothing(t *testing.T) {
	t.Helper()
	if msg, ok := m.tryRecv(t, 0); ok {
		t.Fatalf("unexpected notification %q", msg.data)
	}
}
