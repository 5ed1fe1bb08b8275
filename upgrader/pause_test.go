package upgrader

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestPausableListener: a paused listener accepts nothing, but its socket
// stays open: a client's connection completes in the kernel's queue and is
// accepted as soon as the listener resumes. An Accept in progress when the
// pause begins is interrupted, not left to take the next connection; a
// Close wakes an Accept waiting for a resume.
func TestPausableListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newPausableListener(raw)
	defer l.Close()

	accepted := make(chan net.Conn, 4)
	errs := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				errs <- err
				return
			}
			accepted <- c
		}
	}()
	// The Accept above may be in progress: pause interrupts it.
	time.Sleep(20 * time.Millisecond)
	l.pause()

	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatalf("dial while paused: %v (the socket must stay open)", err)
	}
	defer c.Close()
	select {
	case a := <-accepted:
		a.Close()
		t.Fatal("a paused listener accepted a connection")
	case <-time.After(200 * time.Millisecond):
	}

	l.resume()
	select {
	case a := <-accepted:
		a.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the queued connection was not accepted after the resume")
	}

	l.pause()
	l.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a paused Accept")
	}
}

// TestProbationPausesUnixListeners: with a probation, a Unix listener the
// service takes stops accepting like a TCP one (its connections wait in the
// kernel's queue for the new process, or for this one after a rollback);
// the control socket, which the old process answers until the commit, is
// not paused.
func TestProbationPausesUnixListeners(t *testing.T) {
	dir := t.TempDir()
	u, _ := newTestUpgrader(t, Options{Probation: time.Second, ControlSocket: filepath.Join(dir, "control.sock")})
	path := filepath.Join(dir, "http.sock")
	ln, err := u.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(u.pausables()); n != 1 {
		t.Fatalf("%d pausable listeners, want 1: the service's Unix listener, not the control socket", n)
	}
	u.pauseListeners()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial while paused: %v (the socket must stay open)", err)
	}
	defer c.Close()
	select {
	case a := <-accepted:
		a.Close()
		t.Fatal("a paused Unix listener accepted a connection")
	case <-time.After(200 * time.Millisecond):
	}
	u.resumeListeners()
	select {
	case a := <-accepted:
		a.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the queued connection was not accepted after the resume")
	}
}
