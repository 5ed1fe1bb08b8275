package sdns_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/sdns"
)

const dieEnv = "SDNS_TEST_BOOT_AND_DIE"

// TestGuestDiesWithTestProcess boots an instance from a child test process
// that is then SIGKILLed, so that none of its cleanups run: the
// SDNS_OWNER_PID watcher must still power the guest off and remove its
// cgroup.
func TestGuestDiesWithTestProcess(t *testing.T) {
	if info := os.Getenv(dieEnv); info != "" {
		in := sdns.Boot(t, sdns.Options{NoJournal: true})
		cg, err := os.ReadFile(filepath.Join(in.Dir(), ".sdns", "cgroup"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(info, fmt.Appendf(nil, "%d %s %s", in.PID(), in.Dir(), cg), 0o644); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}

	info := filepath.Join(t.TempDir(), "info")
	cmd := exec.Command(os.Args[0], "-test.run=^TestGuestDiesWithTestProcess$", "-test.v")
	cmd.Env = append(os.Environ(), dieEnv+"="+info)
	cmd.WaitDelay = 10 * time.Second
	out, _ := cmd.CombinedOutput() // killed: the error is expected
	b, err := os.ReadFile(info)
	if err != nil {
		if strings.Contains(string(out), "--- SKIP") {
			t.Skipf("child skipped:\n%s", out)
		}
		t.Fatalf("child did not boot: %v\n%s", err, out)
	}
	var (
		pid     int
		dir, cg string
	)
	if _, err := fmt.Sscanf(string(b), "%d %s %s", &pid, &dir, &cg); err != nil {
		t.Fatalf("info %q: %v", b, err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "sdns-") || !strings.Contains(cg, "/sdns.") {
		t.Fatalf("unexpected instance %q / cgroup %q", dir, cg)
	}
	sdns.Poll(t, 15*time.Second, "the guest's systemd to go after its owner died", func() bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// a zombie waiting for its reaper counts as gone
		fields := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
	})
	sdns.Poll(t, 15*time.Second, "the guest's cgroup to be removed", func() bool {
		_, err := os.Stat(cg)
		return os.IsNotExist(err)
	})
	// nobody ran Stop, so the directory is left; the guest is gone, so it
	// can go, once the last writer outside the namespaces (script(1)'s
	// console log) has gone too: a removal that raced it saw the
	// directory refilled ("directory not empty", once under load)
	sdns.Poll(t, 15*time.Second, "the instance directory to be removable", func() bool {
		return os.RemoveAll(dir) == nil
	})
}
