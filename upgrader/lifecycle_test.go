package upgrader

// Unit-level regression tests for the lifecycle hardening of issue 13
// (items 4 and 14); the end-to-end ones are in
// tests/hardening_lifecycle_test.go.

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// captureFlip is fakeFlip that keeps the files handed to the next
// generation, so that a test can play the new process on the other end of
// the real handoff socket.
type captureFlip struct {
	*fakeFlip
	mu    sync.Mutex
	files map[string]*os.File
}

func (f *captureFlip) AddFile(name string, file *os.File) error {
	fd, err := unix.FcntlInt(file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[name] = os.NewFile(uintptr(fd), name)
	return nil
}

// TestUpgradeDeadlineRacesReady (item 4): the caller's deadline passes just
// as the new process becomes ready. Exactly one outcome may hold: the new
// process won (Upgrade succeeds, Exit closes, the process is alive) or it
// lost (Upgrade fails, it is killed, Exit stays open). The new process is
// played by the test over the real handoff socket; its pid is a real
// process, which the upgrader kills if it decides to. When it asks the old
// process whether it may become ready (a "ready-request"), it obeys the
// answer; an old process that does not answer gives no such chance, and the
// child then writes its ready byte at the deadline, as one did before.
func TestUpgradeDeadlineRacesReady(t *testing.T) {
	for _, tt := range []struct {
		name string
		// cancelFirst: the deadline passes before the new process asks
		// to become ready; otherwise just after it was allowed.
		cancelFirst bool
	}{{"deadline-then-ready", true}, {"ready-then-deadline", false}} {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ff := &captureFlip{fakeFlip: newFakeFlip(), files: map[string]*os.File{}}
			u, err := newUpgrader(ff, Options{}, "")
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			child, err := fileConn(ff.files[handoffFileName+"1"])
			if err != nil {
				t.Fatal(err)
			}
			defer child.Close()
			proc, exited, stop := sleeper(t)
			defer stop()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type outcome struct {
				res Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := u.Upgrade(ctx)
				done <- outcome{res, err}
			}()
			<-ff.started

			// The new process says hello, asks for the state and
			// restores it.
			playRestore(t, child, proc.Process.Pid)

			// Becoming ready, at the deadline.
			if tt.cancelFirst {
				cancel()
			}
			if err := child.send(message{Type: "ready-request", Attempt: 1}, nil); err != nil {
				t.Fatal(err)
			}
			child.SetReadDeadline(time.Now().Add(2 * time.Second))
			reply, _, err := child.recv(nil)
			if !tt.cancelFirst {
				cancel()
			}
			killed := func() bool {
				select {
				case <-exited:
					return true
				case <-time.After(5 * time.Second):
					return false
				}
			}
			switch {
			case err == nil && reply.Type == "ready-go":
				ff.result <- nil // the ready byte
			case err == nil && reply.Type == "ready-abort":
				if !killed() {
					t.Error("the old process refused the new one's ready but did not kill it")
				}
				ff.result <- errors.New("child pid exited: signal: killed")
			case isTimeout(err):
				// No answer: the new process writes its ready byte; it
				// reached the pipe just as the kill came.
				killed()
				ff.result <- nil
			default:
				t.Fatalf("reply to ready-request: %+v, %v", reply, err)
			}
			got := <-done
			select {
			case <-exited:
			case <-time.After(200 * time.Millisecond):
				// Not killed: give a kill in flight a moment to land.
			}
			dead := false
			select {
			case <-exited:
				dead = true
			default:
			}
			exitClosed := false
			select {
			case <-u.Exit():
				exitClosed = true
			default:
			}
			t.Logf("reply %q, Upgrade: %+v, %v; new process killed: %v; Exit closed: %v", reply.Type, got.res, got.err, dead, exitClosed)
			switch {
			case got.err == nil && (dead || !exitClosed):
				t.Errorf("Upgrade succeeded, but the new process was killed (%v) or Exit not closed (%v): nobody serves", dead, !exitClosed)
			case got.err != nil && (!dead || exitClosed):
				t.Errorf("Upgrade failed (%v), but the new process is alive (%v) or Exit closed (%v)", got.err, !dead, exitClosed)
			}
			if tt.cancelFirst && got.err == nil {
				t.Errorf("the deadline passed before the new process asked to become ready, and it won")
			}
			if !tt.cancelFirst && got.err != nil {
				t.Errorf("the new process was allowed to become ready before the deadline, and lost: %v", got.err)
			}
		})
	}
}

// TestStateFileDirMissing (item 14): a StateFile in a directory that does
// not exist is refused by New, not found out at the stop.
func TestStateFileDirMissing(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "missing", "state")
	u, err := newUpgrader(newFakeFlip(), Options{StateFile: path}, "")
	if err == nil {
		u.Close()
		t.Fatalf("New accepted StateFile %s in a directory that does not exist", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("New: %v, want an error wrapping fs.ErrNotExist", err)
	}
	// A file where the directory should be.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err = newUpgrader(newFakeFlip(), Options{StateFile: filepath.Join(file, "state")}, "")
	if err == nil {
		u.Close()
		t.Fatal("New accepted StateFile under a regular file")
	}
	if !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("New: %v, want an error wrapping ENOTDIR", err)
	}
}

// TestUnixSocketOwnership (item 1): only the last owner of a Unix socket
// removes its path. A new process that is not ready removes nothing, even
// what it took; once ready it owns what it inherited, and removes at its
// stop the paths it serves and, at Ready, those no Listen call took. An
// adopted (external) socket is never removed.
func TestUnixSocketOwnership(t *testing.T) {
	tests := []struct {
		name    string
		file    string // the name it is inherited under
		listen  bool   // a Listen call takes it
		ready   bool
		removed bool // the path is gone after Close
	}{
		{name: "taken, not ready", file: unixFilePrefix + "0", listen: true},
		{name: "taken, ready", file: unixFilePrefix + "0", listen: true, ready: true, removed: true},
		{name: "not taken, not ready", file: unixFilePrefix + "0"},
		{name: "not taken, ready", file: unixFilePrefix + "0", ready: true, removed: true},
		{name: "external, ready", file: unixExtPrefix + "0", listen: true, ready: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			path := filepath.Join(t.TempDir(), "s.sock")
			parent, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			ul := parent.(*net.UnixListener)
			ul.SetUnlinkOnClose(false)
			defer parent.Close()
			f, err := ul.File()
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]*os.File{tt.file: f}
			u, err := newUpgrader(newChildFlip(files), Options{}, "")
			if err != nil {
				t.Fatal(err)
			}
			if tt.listen {
				ln, err := u.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				if got := u.Listeners(); len(got) != 1 || !got[0].Inherited {
					t.Fatalf("Listeners: %+v, want the one inherited", got)
				}
				// It is the parent's socket: a client reaches the
				// listener taken here.
				c, err := net.Dial("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				if a, err := ln.Accept(); err == nil {
					a.Close()
				}
			}
			if tt.ready {
				if err := u.Ready(); err != nil {
					t.Fatal(err)
				}
			}
			u.Close()
			_, err = os.Lstat(path)
			if gone := errors.Is(err, fs.ErrNotExist); gone != tt.removed {
				t.Fatalf("after Close: %v; want removed %v", err, tt.removed)
			}
		})
	}
}
