package tests

import (
	"bufio"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// askPid connects to a socket of multisvc and returns the pid that answered.
func askPid(t *testing.T, network, addr string) int {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if network == "udp" || network == "unixgram" {
		if _, err := c.Write([]byte("pid?")); err != nil {
			t.Fatal(err)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !(network == "udp" || network == "unixgram") {
		t.Fatalf("read %s %s: %v", network, addr, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s %s answered %q", network, addr, line)
	}
	return pid
}

// unixgramClient dials a unixgram socket from a bound address of its own,
// so the service can answer.
func askPidUnixgram(t *testing.T, addr, dir string) int {
	t.Helper()
	local := &net.UnixAddr{Name: filepath.Join(dir, "client-"+strconv.Itoa(int(time.Now().UnixNano()))), Net: "unixgram"}
	c, err := net.DialUnix("unixgram", local, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("pid?")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("unixgram answered %q", buf[:n])
	}
	return pid
}

// TestEveryListenerKind: TCP on IPv4 and IPv6 (port 0), UDP, Unix stream
// and datagram sockets and a named file all move to the new process, at the
// same addresses, and are served by it.
func TestEveryListenerKind(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "multisvc-bin")
	if err := demotest.Build("./tests/multisvc", bin, demotest.BuildOpts{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	args := []string{"-dir", dir, "-pidfile", filepath.Join(dir, "demo.pid")}
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Logf("no IPv6 loopback here (%v): IPv6 not tested", err)
		args = append(args, "-v6=false")
	} else {
		l.Close()
	}
	p := demotest.StartCmd(t, bin, dir, args...)
	first, err := p.Logs.Wait(5*time.Second, upgradertest.Match{Msg: "serving"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"tcp4", "unix", "udp", "unixgram"}
	if first.Fields["tcp6"] != "" {
		kinds = append(kinds, "tcp6")
	}
	ask := func(kind string, fields map[string]string) int {
		switch kind {
		case "unixgram":
			return askPidUnixgram(t, fields[kind], dir)
		case "udp":
			return askPid(t, "udp", fields[kind])
		}
		return askPid(t, kind, fields[kind])
	}
	for _, k := range kinds {
		if got := ask(k, first.Fields); got != first.Pid {
			t.Fatalf("%s answered by %d, want %d", k, got, first.Pid)
		}
	}

	for gen := 1; gen <= 3; gen++ {
		old := p.Pid(t)
		mark := p.Logs.Len()
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		line, err := p.Logs.WaitFrom(mark, 30*time.Second, upgradertest.Match{Msg: "upgraded", Pid: old},
			upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
		if err != nil || line.Msg != "upgraded" {
			t.Fatalf("upgrade %d: %v %q", gen, err, line.Raw)
		}
		newPid, _ := strconv.Atoi(line.Fields["new_pid"])
		if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		now, err := p.Logs.WaitFrom(mark, 5*time.Second, upgradertest.Match{Msg: "serving", Pid: newPid})
		if err != nil {
			t.Fatal(err)
		}
		if now.Fields["generation"] != strconv.Itoa(gen) {
			t.Errorf("generation %s, want %d", now.Fields["generation"], gen)
		}
		for _, k := range append(kinds, "file_ino") {
			if now.Fields[k] != first.Fields[k] {
				t.Errorf("generation %d: %s is %q, was %q", gen, k, now.Fields[k], first.Fields[k])
			}
		}
		for _, k := range kinds {
			if got := ask(k, now.Fields); got != newPid {
				t.Errorf("generation %d: %s answered by %d, want %d", gen, k, got, newPid)
			}
		}
	}
}
