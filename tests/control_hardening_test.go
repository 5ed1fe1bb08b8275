package tests

// Hostile and hanging neighbours of the control socket (issue 13, items 10
// and 11): a client that connects and says nothing, a path that is not a
// socket, a directory others can write, a socket served by another user.

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestCLISilentControlClient: a client connected to the control socket that
// never sends its request does not hold the old process after an upgrade:
// "baton upgrade --wait" waits for the old process to exit, and it exits
// once drained, not when the silent client's request deadline (10 s) runs
// out. The CLI's --timeout of 5 s bounds both the upgrade and that wait.
// Twice: on the socket the first process created and on the inherited one.
func TestCLISilentControlClient(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	p := demotest.StartEnv(t, nil, demoV1, dir, "-control", sock)
	for i := 0; i < 2; i++ {
		silent, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		// One accept loop takes connections in order: once the status
		// is answered, the silent client was accepted before it.
		if _, errOut, code := baton(t, nil, "status", "--socket", sock); code != 0 {
			t.Fatalf("status: exit %d %s", code, errOut)
		}
		old := p.Pid(t)
		start := time.Now()
		out, errOut, code := baton(t, nil, "upgrade", "--socket", sock, "--wait", "--timeout", "5s")
		if code != 0 {
			t.Fatalf("upgrade %d with a silent control client: exit %d after %v\n%s%s", i, code, time.Since(start), out, errOut)
		}
		if upgradertest.Alive(old) {
			t.Fatalf("upgrade %d: old pid %d still alive after baton upgrade --wait returned", i, old)
		}
		t.Logf("upgrade %d with a silent control client: %v", i, time.Since(start))
	}
}

// TestCLIControlPathNotASocket: a control path that exists and is not a
// socket is not deleted: the service refuses to start, says why, and the
// file is intact. A socket left by a process that died is still replaced.
func TestCLIControlPathNotASocket(t *testing.T) {
	tests := []struct {
		name   string
		make   func(t *testing.T, path string)
		check  func(t *testing.T, path string)
		starts bool
	}{
		{name: "regular file", make: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("precious\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T, path string) {
			if b, err := os.ReadFile(path); err != nil || string(b) != "precious\n" {
				t.Errorf("the file at the control path: %q, %v; want it intact", b, err)
			}
		}},
		{name: "empty directory", make: func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T, path string) {
			if fi, err := os.Lstat(path); err != nil || !fi.IsDir() {
				t.Errorf("the directory at the control path: %v, %v; want it intact", fi, err)
			}
		}},
		{name: "symlink", make: func(t *testing.T, path string) {
			target := filepath.Join(filepath.Dir(path), "target")
			if err := os.WriteFile(target, []byte("precious\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T, path string) {
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the symlink at the control path: %v, %v; want it intact", fi, err)
			}
		}},
		{name: "stale socket", starts: true, make: func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close() // what a process that died leaves: nobody answers
		}, check: func(t *testing.T, path string) {
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Errorf("control socket: %v, %v", fi, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := controlDir(t)
			sock := filepath.Join(dir, "control.sock")
			tt.make(t, sock)
			d := startRawDemo(t, nil, demoV1, dir, "-addr", "127.0.0.1:0", "-control", sock)
			if tt.starts {
				d.serving(t)
				if _, errOut, code := baton(t, nil, "status", "--socket", sock); code != 0 {
					t.Fatalf("status: exit %d %s", code, errOut)
				}
				tt.check(t, sock)
				return
			}
			code, exited := d.exitCode(10 * time.Second)
			if !exited {
				t.Fatalf("baton-demo serves with -control at a %s: it replaced it\n%s", tt.name, d.log())
			}
			if code == 0 {
				t.Errorf("baton-demo exited 0 with -control at a %s", tt.name)
			}
			if !strings.Contains(d.log(), "not a socket") {
				t.Errorf("the refusal does not say the path is not a socket:\n%s", d.log())
			}
			tt.check(t, sock)
		})
	}
}

// TestCLIControlPathOpenDir: in a directory other users can write (here
// mode 1777, like /tmp) another user can take the control path before the
// service does. The service refuses such a directory and touches nothing in
// it: neither a path that is free nor a file another user put there.
func TestCLIControlPathOpenDir(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	for _, squatted := range []bool{false, true} {
		name := "free"
		if squatted {
			name = "squatted"
		}
		t.Run(name, func(t *testing.T) {
			dir := controlDir(t)
			if err := os.Chmod(dir, 0o1777); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "control.sock")
			if squatted {
				if err := os.WriteFile(sock, []byte("nobody's\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(sock, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
			d := startRawDemo(t, nil, demoV1, dir, "-addr", "127.0.0.1:0", "-control", sock)
			code, exited := d.exitCode(10 * time.Second)
			if !exited {
				t.Fatalf("baton-demo serves its control socket in a world-writable directory\n%s", d.log())
			}
			if code == 0 {
				t.Errorf("baton-demo exited 0")
			}
			if !strings.Contains(d.log(), "writable by other users") {
				t.Errorf("the refusal does not say why:\n%s", d.log())
			}
			fi, err := os.Lstat(sock)
			switch {
			case !squatted && err == nil:
				t.Errorf("the service left %v at the control path", fi.Mode())
			case squatted && err != nil:
				t.Errorf("the other user's file is gone: %v", err)
			case squatted:
				if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || !fi.Mode().IsRegular() {
					t.Errorf("the other user's file was replaced: %v uid %d", fi.Mode(), st.Uid)
				}
			}
		})
	}
}

// TestCLIChecksServerUid: the baton command sends nothing to a control
// socket served by another user (one who took the path first): it checks
// the server's uid with SO_PEERCRED and accepts only its own and root's.
func TestCLIChecksServerUid(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the service as another user")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	dir := controlDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control.sock")
	d := startRawDemo(t, nobody, demoV1, dir, "-addr", "127.0.0.1:0", "-control", sock,
		"-pidfile", filepath.Join(dir, "demo.pid"))
	addr := d.serving(t)

	// The service's own user reaches it.
	if _, errOut, code := baton(t, nobody, "status", "--socket", sock); code != 0 {
		t.Fatalf("status as the service's user: exit %d %s", code, errOut)
	}
	// Root's CLI refuses to talk to it.
	for _, args := range [][]string{
		{"status", "--socket", sock},
		{"upgrade", "--socket", sock, "--wait"},
		{"upgrade", "--socket", sock},
	} {
		out, errOut, code := baton(t, nil, args...)
		if code != 3 || !strings.Contains(errOut, "uid 65534") {
			t.Errorf("baton %v against a service of uid 65534: exit %d, stdout %q, stderr %q; want 3 naming the uid",
				args, code, out, errOut)
		}
	}
	if got := rootAt(t, addr); got.Generation != 0 {
		t.Errorf("a command reached the other user's service: generation %d", got.Generation)
	}
	if strings.Contains(d.log(), "upgrade started") {
		t.Errorf("the other user's service received an upgrade:\n%s", d.log())
	}
}
