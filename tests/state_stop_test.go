package tests

// The final state file of a graceful stop (issue 13, item 5): written
// whatever the drain did, and a failure to write it is an exit status.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// halfRequest opens a connection to addr and sends a request without the
// blank line that ends its headers: the drain waits for it until its
// deadline, then closes it.
func halfRequest(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	waitServerRead(t, c)
}

// waitServerRead waits until the server has accepted c and read what was
// sent on it: its end of the connection, in /proc/net/tcp, has nothing
// left in its receive queue. A stop sent before that would find no
// half-read request to wait for.
func waitServerRead(t *testing.T, c net.Conn) {
	t.Helper()
	hexAddr := func(a net.Addr) string {
		ta := a.(*net.TCPAddr)
		ip := ta.IP.To4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ta.Port)
	}
	// The server's end: local is the address c dialled, remote is c's own.
	local, remote := hexAddr(c.RemoteAddr()), hexAddr(c.LocalAddr())
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == local && f[2] == remote && strings.HasSuffix(f[4], ":00000000") {
				return
			}
		}
	}
	t.Fatal("the server did not read the half request within 5 s")
}

// TestStateFileWrittenAfterForcedDrain: SIGTERM with a client that sent
// half a request: the drain runs out its 2 s and closes the connection, and
// the final state file is still written; the next start carries on from it.
func TestStateFileWrittenAfterForcedDrain(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state")
	args := []string{"-addr", "127.0.0.1:0", "-state-file", file, "-drain", "2s"}
	d := startRawDemo(t, nil, demoV1, dir, args...)
	addr := d.serving(t)
	for i := 0; i < 3; i++ {
		rootAt(t, addr)
	}
	halfRequest(t, addr)
	code := d.terminate(t)
	if _, err := d.waitLog(time.Second, `msg="drain deadline reached: closed connections"`); err != nil {
		t.Errorf("the drain was not forced, the test proves nothing: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no state file after a forced drain (exit %d): %v\n%s", code, err, d.log())
	}
	if code != 0 {
		t.Errorf("exit %d with the state file written\n%s", code, d.log())
	}

	again := startRawDemo(t, nil, demoV1, dir, args...)
	if got := rootAt(t, again.serving(t)); got.Hits != 4 {
		t.Errorf("hits %d after restarting from the state file, want 4: the state written at the stop was not the last", got.Hits)
	}
}

// TestStateFileFailureExitsNonZero: the final state file cannot be written
// (its directory is gone): the process says so in its log and exits
// non-zero, whether or not the drain ran out first.
func TestStateFileFailureExitsNonZero(t *testing.T) {
	for _, slow := range []bool{false, true} {
		name := "drained"
		if slow {
			name = "forced drain"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			d := startRawDemo(t, nil, demoV1, dir, "-addr", "127.0.0.1:0",
				"-state-file", filepath.Join(sub, "state"), "-drain", "2s")
			addr := d.serving(t)
			if err := os.RemoveAll(sub); err != nil {
				t.Fatal(err)
			}
			if slow {
				halfRequest(t, addr)
			}
			if code := d.terminate(t); code == 0 {
				t.Errorf("exit 0 although the state file could not be written\n%s", d.log())
			}
			if _, err := d.waitLog(time.Second, "level=ERROR", `msg="state file not written"`); err != nil {
				t.Error(err)
			}
		})
	}
}
