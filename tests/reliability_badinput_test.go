package tests

// Reliability cases of bad input: a handoff or activation environment the
// new process cannot use, malformed control requests; see
// reliability_helpers_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestBadHandoffEnv: the new process is started through a wrapper that
// replaces BATON_HANDOFF with something it cannot use. It cannot receive the
// state, so it must not become ready: the upgrade fails and the old process
// keeps serving with all its state.
func TestBadHandoffEnv(t *testing.T) {
	tests := []struct {
		name, value, wantLog string
	}{
		{"garbage", "garbage", "bad field"},
		{"other-version", "v=2;ppid=$PPID;gen=1;attempt=1", "version 2"},
		{"other-parent", "v=1;ppid=1;gen=1;attempt=1", "meant for a child of pid 1"},
		{"unknown-fd-name", "v=1;ppid=$PPID;gen=9;attempt=1", "baton.handoff.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, demoFault, nil)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			real := filepath.Join(s.Dir, "baton-demo-real")
			upgradertest.Install(t, demoFault, real)
			script := fmt.Sprintf("#!/bin/sh\nBATON_HANDOFF=\"%s\" exec %s \"$@\"\n", tt.value, real)
			r := underLoad(t, standardLoad(s.URL), func() {
				upgradertest.InstallBytes(t, []byte(script), s.Bin, 0o755)
				u := s.Upgrade(t)
				t.Logf("upgrade: %+v", u)
				if u.Err == "" {
					t.Fatalf("a new process that could not receive the state became ready (pid %d)", u.NewPid)
				}
				if got := s.Root(t); got.Pid != old {
					t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
				}
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			t.Logf("the new process said: %s", strings.TrimSpace(childErrors(s, old)))
			if !strings.Contains(childErrors(s, old), tt.wantLog) {
				t.Errorf("the new process did not say %q:\n%s", tt.wantLog, s.Logs)
			}
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			s.exe = real
			assertOnlyAlive(t, s)
		})
	}
}

// serveOrExit starts cmd with its output read by the kit's log reader and
// waits, up to 10 s, until it either exits or logs that it serves, in
// which case it stops it with SIGTERM. It returns all it wrote, whether it
// served and how it exited.
func serveOrExit(t *testing.T, cmd *exec.Cmd) (out string, served bool, err error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	logs := upgradertest.ReadLogs(r)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serving := make(chan error, 1)
	go func() {
		_, err := logs.WaitContext(ctx, 0, upgradertest.Match{Msg: "serving"})
		serving <- err
	}()
	select {
	case err = <-exited:
	case werr := <-serving:
		switch {
		case werr == nil:
			served = true
			cmd.Process.Signal(syscall.SIGTERM)
			err = <-exited
		case errors.Is(werr, context.DeadlineExceeded):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("neither served nor exited in 10 s:\n%s", logs)
		default: // the output ended: it exited
			err = <-exited
		}
	}
	cancel()
	select {
	case <-logs.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("output still open 5 s after the exit")
	}
	var all strings.Builder
	for _, l := range logs.Lines(0) {
		all.WriteString(l.Raw + "\n")
	}
	return all.String(), served, err
}

// TestBadActivationEnv: baton-demo started with malformed socket-activation
// variables bound to it (LISTEN_PID is its own pid). It must refuse to start
// with an error naming the variable, or, where the variables are well
// formed but name descriptors that are not listening sockets, close them,
// say so and serve; never panic. The parsing itself is tested in the
// systemd package (activation_test.go); this checks what the service does
// with it.
func TestBadActivationEnv(t *testing.T) {
	tests := []struct {
		name   string
		script string // sets the variables, then execs the demo
		serves bool
		either bool // serving or refusing are both acceptable
		socket bool // pass a listening TCP socket as fd 3
		want   string
	}{
		{name: "fds-garbage", script: "export LISTEN_PID=$$ LISTEN_FDS=garbage", want: `LISTEN_FDS="garbage"`},
		{name: "fds-negative", script: "export LISTEN_PID=$$ LISTEN_FDS=-1", want: `LISTEN_FDS="-1"`},
		{name: "fds-huge", script: "export LISTEN_PID=$$ LISTEN_FDS=99999999999", want: "LISTEN_FDS=99999999999"},
		// fds 3 and 4 are not passed, but the Go runtime (1.25 and
		// later) opens its cgroup CPU limit files there: the check that
		// they are open passes, and the integration closes them as
		// "not a listening socket". See RELIABILITY.md.
		{name: "fds-claimed-not-passed", script: "exec 3>&- 4>&-; export LISTEN_PID=$$ LISTEN_FDS=2", either: true, want: "LISTEN_FDS"},
		{name: "names-mismatch", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b; exec 3</dev/null", want: "LISTEN_FDNAMES"},
		{name: "pid-garbage", script: "export LISTEN_PID=garbage LISTEN_FDS=1", want: `LISTEN_PID="garbage"`},
		{name: "fd-not-a-socket", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec 3</dev/null", serves: true,
			want: "systemd: closed an activated descriptor"},
		{name: "other-process", script: "export LISTEN_PID=1 LISTEN_FDS=1", serves: true, want: "msg=serving"},
		// A real listening socket under a name no Listen call asks for
		// (the demo listens on -addr 127.0.0.1:0): closed at Ready.
		{name: "unknown-fd-name", script: "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=bogus", socket: true, serves: true,
			want: "closed a socket-activated listener no Listen call asked for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "baton-demo")
			upgradertest.Install(t, demoV1, bin)
			cmd := exec.Command("/bin/sh", "-c", tt.script+"; exec "+bin+" -addr 127.0.0.1:0")
			if tt.socket {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				f, err := ln.(*net.TCPListener).File()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = []*os.File{f}
			}
			out, served, err := serveOrExit(t, cmd)
			t.Logf("served %v, exit %v: %s", served, err, strings.TrimSpace(out[max(0, strings.LastIndex(out, "baton-demo:")):]))
			if served != tt.serves && !tt.either {
				t.Errorf("served = %v, want %v:\n%s", served, tt.serves, out)
			}
			if !served && err == nil {
				t.Errorf("refused to serve but exited 0")
			}
			if served && tt.either {
				tt.want = "systemd: closed an activated descriptor"
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output does not say %q:\n%s", tt.want, out)
			}
			if strings.Contains(out, "panic") {
				t.Errorf("panicked:\n%s", out)
			}
		})
	}
}

// TestControlSocketBadInput: malformed requests on the control socket get
// an error reply with the right code, change nothing and leave nothing
// behind; the parsing itself is fuzzed in the upgrader package
// (FuzzParseControlRequest).
func TestControlSocketBadInput(t *testing.T) {
	dir := controlDir(t)
	sock := filepath.Join(dir, "control.sock")
	s := startServiceIn(t, dir, demoV1, nil, "-control", sock)
	pid := s.Pid(t)
	before := usageOf(t, s, pid)
	tests := []struct {
		name      string
		request   string
		halfClose bool // end the request without a newline
		wantType  string
		wantCode  string
		wantErr   string
	}{
		{name: "not JSON", request: "not json\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "binary", request: "\x00\xff\xfe\x01\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "trailing garbage", request: `{"v":1,"cmd":"status"} x` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "not JSON"},
		{name: "other version", request: `{"v":2,"cmd":"status"}` + "\n", wantType: "error", wantCode: "version", wantErr: "protocol version 2"},
		{name: "no version", request: `{"cmd":"status"}` + "\n", wantType: "error", wantCode: "version", wantErr: "protocol version 0"},
		{name: "unknown command", request: `{"v":1,"cmd":"frobnicate"}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: `unknown command "frobnicate"`},
		{name: "negative timeout", request: `{"v":1,"cmd":"upgrade","timeout_ms":-1}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "out of range"},
		{name: "timeout overflows", request: `{"v":1,"cmd":"upgrade","timeout_ms":9223372036854775807}` + "\n", wantType: "error", wantCode: "bad_request", wantErr: "out of range"},
		{name: "longer than 64 KiB", request: strings.Repeat("x", 70000) + "\n", wantType: "error", wantCode: "bad_request", wantErr: "longer than 65536"},
		{name: "no newline", request: `{"v":1,"cmd":"status"}`, halfClose: true, wantType: "error", wantCode: "bad_request", wantErr: "EOF"},
		{name: "empty", request: "", halfClose: true, wantType: "error", wantCode: "bad_request", wantErr: "EOF"},
		// The limit is 64 KiB, not the reader's 4 KiB buffer.
		{name: "8 KiB request", request: `{"v":1,"cmd":"status","pad":"` + strings.Repeat("x", 8192) + `"}` + "\n", wantType: "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				c.(*net.UnixConn).CloseWrite()
			}
			b, err := io.ReadAll(c)
			// The service closes a request it will not read to its
			// end with input unread: the reply arrives, then a reset.
			if err != nil && !(errors.Is(err, syscall.ECONNRESET) && bytes.HasSuffix(b, []byte("\n"))) {
				t.Fatalf("%v after %q", err, b)
			}
			var reply upgrader.ControlReply
			if err := json.Unmarshal(b, &reply); err != nil {
				t.Fatalf("reply %q: %v", b, err)
			}
			if reply.Type != tt.wantType || reply.Code != tt.wantCode || !strings.Contains(reply.Error, tt.wantErr) {
				t.Errorf("reply %+v; want type %q, code %q, saying %q", reply, tt.wantType, tt.wantCode, tt.wantErr)
			}
		})
	}
	out, _, code := baton(t, nil, "status", "--socket", sock, "--json")
	var st upgrader.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Pid != pid || st.Generation != 0 || len(st.History) != 0 {
		t.Errorf("status after the bad requests: exit %d, %v, %+v", code, err, st)
	}
	assertUsageSettles(t, s, pid, before)
}
