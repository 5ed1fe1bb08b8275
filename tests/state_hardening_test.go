package tests

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestColdRollbackKeepsNewerStateFile: a state file written by release 3
// (kv schema 3) is read by release 1, which knows only schema 1; release 3
// has no way down. That is not damage: release 1 must say so and leave the file
// where it is, untouched, rather than move it aside and start fresh (and
// then overwrite it at its own stop); release 3, started again, restores
// everything from it.
func TestColdRollbackKeepsNewerStateFile(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "demo.state")
	p := demotest.StartEnv(t, nil, demoV3, dir, "-state-file", stateFile)
	for range 3 {
		p.Root(t)
	}
	pid := p.Pid(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := upgradertest.WaitExit(pid, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatalf("release 3 wrote no state file: %v", err)
	}

	// Release 1 in the same directory, on the same file.
	bin := filepath.Join(dir, "baton-demo-v1")
	upgradertest.Install(t, demoV1, bin)
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-state-file", stateFile)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		t.Fatalf("release 1 started on release 3's state file instead of refusing it:\n%s", out.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("release 1 on release 3's state file: %v, want a non-zero exit\n%s", err, out.String())
	}
	t.Logf("release 1 refused:\n%s", out.String())
	kept, err := os.ReadFile(stateFile)
	if err != nil || !bytes.Equal(kept, written) {
		t.Fatalf("the state file is gone or changed after release 1 refused it (%v)\n%s", err, out.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".corrupt-") {
			t.Errorf("release 1 moved a copy aside: %s", e.Name())
		}
	}

	// Release 2 again: everything is there.
	q := demotest.StartEnv(t, nil, demoV3, t.TempDir(), "-state-file", stateFile)
	if _, err := q.Logs.Wait(5*time.Second, upgradertest.Match{Msg: "state restored from file"}); err != nil {
		t.Fatalf("release 3 did not restore the kept file: %v\n%s", err, q.Logs)
	}
	// Both runs are generation 0: the second one's entry replaces the
	// first one's.
	if kv := q.KV(t); kv.Count != kvSeed+1 {
		t.Errorf("release 3 restored %d entries, want %d (the seed and generation 0's)", kv.Count, kvSeed+1)
	}
	before := uint64(p.Gets.Load())
	if got := q.Root(t); got.Hits != before+1 {
		t.Errorf("hits = %d after the restart, want %d (%d before the stop, then this one)", got.Hits, before+1, before)
	}
}
