//go:build linux

package systemd_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/systemdtest"
)

// TestFilesInChild runs the test binary as a socket-activated child with
// two listening sockets at fds 3 and 4 and checks what Files gives it and
// what its own children inherit.
func TestFilesInChild(t *testing.T) {
	web, admin := systemdtest.Listen(t), systemdtest.Listen(t)
	rep := startHelper(t, "files+child", []*os.File{systemdtest.ListenerFile(t, web), systemdtest.ListenerFile(t, admin)},
		"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin")
	if rep.Err != "" {
		t.Fatalf("Files: %s", rep.Err)
	}
	if len(rep.Files) != 2 {
		t.Fatalf("got %d files, want 2: %+v", len(rep.Files), rep.Files)
	}
	for i, want := range []struct {
		name string
		ln   net.Listener
	}{{"web", web}, {"admin", admin}} {
		f := rep.Files[i]
		if f.Name != want.name || f.FD != systemd.ListenFDsStart+i {
			t.Errorf("file %d: name %q fd %d, want %q fd %d", i, f.Name, f.FD, want.name, systemd.ListenFDsStart+i)
		}
		if !f.CloExec || !f.NonBlock {
			// ExtraFiles passed them blocking and inheritable
			t.Errorf("file %d: close-on-exec %v, non-blocking %v; want both", i, f.CloExec, f.NonBlock)
		}
		if ino := systemdtest.ConnFileID(t, want.ln.(*net.TCPListener)).Ino; f.Ino != ino {
			t.Errorf("file %d: inode %d, want the test's listener %d", i, f.Ino, ino)
		}
	}
	if len(rep.Env) != 0 {
		t.Errorf("LISTEN_* left in the environment: %v", rep.Env)
	}
	// A grandchild gets neither the variables nor the sockets. (Its fds 3
	// and 4 are the Go runtime's own cgroup files, opened at start-up since
	// Go 1.25: one more reason never to count descriptors from 3 blindly.)
	if rep.Child == nil || len(rep.Child.Env) != 0 {
		t.Errorf("child inherited LISTEN_*: %+v", rep.Child)
	}
	for fd, target := range rep.Child.FDs {
		if strings.HasPrefix(target, "socket:") || fd < 0 {
			t.Errorf("child inherited fd %d -> %s", fd, target)
		}
	}
}

func TestListenersInChild(t *testing.T) {
	web, admin := systemdtest.Listen(t), systemdtest.Listen(t)
	// queue one connection on each, as the one that triggers activation
	var conns []net.Conn
	for _, ln := range []net.Listener{web, admin} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	rep := startHelper(t, "listeners+child", []*os.File{systemdtest.ListenerFile(t, web), systemdtest.ListenerFile(t, admin)},
		"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin")
	if rep.Err != "" {
		t.Fatalf("Listeners: %s", rep.Err)
	}
	for i, name := range []string{"web", "admin"} {
		if rep.Files[i].Name != name || rep.Files[i].Got != "served tcp" {
			t.Errorf("listener %d: %+v", i, rep.Files[i])
		}
		if got := readReply(t, conns[i]); !strings.HasPrefix(got, name+" from ") {
			t.Errorf("reply on %s: %q", name, got)
		}
	}
	for fd, target := range rep.Child.FDs {
		if strings.HasPrefix(target, "socket:") || fd < 0 {
			t.Errorf("child inherited fd %d -> %s", fd, target)
		}
	}
}

func TestPacketConnsInChild(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	f, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	rep := startHelper(t, "packetconns", []*os.File{f}, "LISTEN_PID=self", "LISTEN_FDS=1", "LISTEN_FDNAMES=dns")
	if rep.Err != "" || len(rep.Files) != 1 || rep.Files[0].Name != "dns" || rep.Files[0].Got != "ping" {
		t.Fatalf("report %+v", rep)
	}
}

// TestActivationEnvironment covers the cases where Files returns nothing or
// an error: nothing must be touched, and the variables must go (unless kept).
func TestActivationEnvironment(t *testing.T) {
	tests := []struct {
		name      string
		mode      string
		env       []string
		files     int // listening sockets passed as fds 3…
		wantFiles []string
		wantErr   string // "invalid" (ErrInvalidActivation), "type" (ErrSocketType) or ""
		wantEnv   bool   // LISTEN_* still set afterwards
	}{
		{name: "not activated", mode: "files"},
		{name: "no names means unknown", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=1"}, files: 1,
			wantFiles: []string{systemd.DefaultFDName}},
		{name: "for another pid", mode: "files", env: []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, files: 1},
		{name: "zero fds", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=0"}},
		{name: "keep environment", mode: "files+keep-env", env: []string{"LISTEN_PID=self", "LISTEN_FDS=1", "LISTEN_FDNAMES=a"}, files: 1,
			wantFiles: []string{"a"}, wantEnv: true},
		{name: "empty name", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=:b"}, files: 2,
			wantFiles: []string{"", "b"}},
		{name: "pid not a number", mode: "files", env: []string{"LISTEN_PID=abc", "LISTEN_FDS=1"}, files: 1, wantErr: "invalid"},
		{name: "count not a number", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=abc"}, files: 1, wantErr: "invalid"},
		{name: "negative count", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=-1"}, files: 1, wantErr: "invalid"},
		{name: "huge count", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=1000000000"}, files: 1, wantErr: "invalid"},
		{name: "count overflows int", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=99999999999999999999"}, files: 1, wantErr: "invalid"},
		{name: "more names than fds", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=1", "LISTEN_FDNAMES=a:b"}, files: 1, wantErr: "invalid"},
		{name: "fewer names than fds", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=a"}, files: 2, wantErr: "invalid"},
		// fds 4 and 5 are taken by the runtime's cgroup files (see
		// TestFilesInChild), so name one far above them
		{name: "fd not open", mode: "files", env: []string{"LISTEN_PID=self", "LISTEN_FDS=50"}, files: 1, wantErr: "invalid"},
		{name: "listener wanted, datagram given", mode: "listeners", env: []string{"LISTEN_PID=self", "LISTEN_FDS=2"}, files: -1, wantErr: "type"},
		{name: "datagram wanted, listener given", mode: "packetconns", env: []string{"LISTEN_PID=self", "LISTEN_FDS=1"}, files: 1, wantErr: "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// each case is a process start, about 1 s with -race
			t.Parallel()
			var files []*os.File
			for range tt.files {
				files = append(files, systemdtest.ListenerFile(t, systemdtest.Listen(t)))
			}
			if tt.files < 0 { // a listener, then a datagram socket
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				f, err := pc.(*net.UDPConn).File()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				files = []*os.File{systemdtest.ListenerFile(t, systemdtest.Listen(t)), f}
			}
			rep := startHelper(t, tt.mode, files, tt.env...)
			var gotErr string
			switch {
			case rep.InvalidActivation:
				gotErr = "invalid"
			case rep.SocketType:
				gotErr = "type"
			case rep.Err != "":
				gotErr = "other: " + rep.Err
			}
			if gotErr != tt.wantErr {
				t.Fatalf("error %q (%s), want %q", gotErr, rep.Err, tt.wantErr)
			}
			var names []string
			for _, f := range rep.Files {
				names = append(names, f.Name)
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.wantFiles) {
				t.Errorf("files %q, want %q", names, tt.wantFiles)
			}
			if got := len(rep.Env) != 0; got != tt.wantEnv {
				t.Errorf("LISTEN_* kept = %v (%v), want %v", got, rep.Env, tt.wantEnv)
			}
			if rep.Err != "" {
				t.Logf("error text: %s", rep.Err)
			}
		})
	}
}

// TestSystemdSocketActivate lets systemd's own tool be the service manager:
// systemd-socket-activate binds two ports, waits for the first connection,
// then execs the test binary as the service with LISTEN_FDS=2 and
// LISTEN_FDNAMES=web:admin.
func TestSystemdSocketActivate(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The tool rejects port 0, so pick free ports; another process can
	// take one in between, hence the bounded retry.
	for attempt := 1; ; attempt++ {
		ports := [2]int{freePort(t), freePort(t)}
		cmd := exec.Command(tool,
			"-l", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"-l", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"--fdname=web:admin",
			"-E", helperEnv+"=activated",
			"-E", modeEnv+"=listeners-announce",
			exe)
		// the tool passes on only PATH, TERM, USER, HOME and -E variables
		cmd.Env = cleanEnv()
		cmd.WaitDelay = 10 * time.Second
		// stderr through a plain pipe (no copying goroutine): the tool's
		// "Listening on 127.0.0.1:P as 4." says both sockets are bound
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = pw
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		pr.SetReadDeadline(time.Now().Add(10 * time.Second))
		bound, log := waitForLine(pr, "as 4.")
		if !bound {
			cmd.Process.Kill()
			cmd.Wait()
			pr.Close()
			if attempt < 3 && strings.Contains(log, "Address already in use") {
				continue
			}
			t.Fatalf("systemd-socket-activate did not bind:\n%s", log)
		}
		defer pr.Close()
		// the first connection makes the tool exec the service, which
		// finds it queued on fd 3
		out := bufio.NewReader(stdout)
		var replies []string
		for i, name := range []string{"web", "admin"} {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[i]))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if line, err := out.ReadString('\n'); line != "listening "+name+"\n" {
				t.Fatalf("service said %q (%v), want listening %s", line, err, name)
			}
			replies = append(replies, readReply(t, c))
		}
		last, _ := out.ReadBytes('\n')
		if err := cmd.Wait(); err != nil {
			t.Fatalf("service: %v\n%s", err, last)
		}
		var rep activationReport
		if err := json.Unmarshal(last, &rep); err != nil {
			t.Fatalf("service report %q: %v", last, err)
		}
		pid := cmd.Process.Pid // the tool execs the service in place
		for i, name := range []string{"web", "admin"} {
			if want := fmt.Sprintf("%s from %d", name, pid); replies[i] != want {
				t.Errorf("port %d answered %q, want %q", ports[i], replies[i], want)
			}
			if f := rep.Files[i]; f.Name != name || f.Got != "served tcp" {
				t.Errorf("listener %d: %+v", i, f)
			}
		}
		if rep.Err != "" || len(rep.Env) != 0 {
			t.Errorf("Listeners error %q, LISTEN_* left: %v", rep.Err, rep.Env)
		}
		return
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitForLine reads r until a line contains substr (true) or r ends (false),
// returning what it read.
func waitForLine(r io.Reader, substr string) (bool, string) {
	sc := bufio.NewScanner(r)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), substr) {
			return true, log.String()
		}
	}
	return false, log.String()
}

// TestFileConversions checks File.Listener and File.PacketConn in-process on
// descriptors the test owns (no LISTEN_* involved).
func TestFileConversions(t *testing.T) {
	ln := systemdtest.Listen(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dupOf := func(c interface{ File() (*os.File, error) }) *os.File {
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name    string
		file    *os.File
		convert func(systemd.File) (interface{ Close() error }, error)
		wantErr error
	}{
		{"tcp listener", dupOf(ln.(*net.TCPListener)), listenerOf, nil},
		{"udp as listener", dupOf(pc.(*net.UDPConn)), listenerOf, systemd.ErrSocketType},
		{"pipe as listener", r, listenerOf, systemd.ErrSocketType},
		{"udp packet conn", dupOf(pc.(*net.UDPConn)), packetConnOf, nil},
		{"tcp listener as packet conn", dupOf(ln.(*net.TCPListener)), packetConnOf, systemd.ErrSocketType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.convert(systemd.File{Name: tt.name, File: tt.file})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				c.Close()
				// the conversion closed the File: the net value owns a duplicate
				if err := tt.file.Close(); !errors.Is(err, os.ErrClosed) {
					t.Errorf("File still open after conversion: %v", err)
				}
				return
			}
			// on error the File stays the caller's
			if err := tt.file.Close(); err != nil {
				t.Errorf("File closed by failed conversion: %v", err)
			}
		})
	}
}

func listenerOf(f systemd.File) (interface{ Close() error }, error)   { return f.Listener() }
func packetConnOf(f systemd.File) (interface{ Close() error }, error) { return f.PacketConn() }
