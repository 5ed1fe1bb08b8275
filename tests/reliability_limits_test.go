package tests

// Reliability cases at the machine's limits: fds, the snapshot's size,
// a full disk, a read-only TMPDIR; see reliability_helpers_test.go.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
	"golang.org/x/sys/unix"
)

// TestFdLimit: the service runs with RLIMIT_NOFILE set, soft and hard,
// just above what it uses under the load (prlimit(1) from util-linux wraps
// the first start; every generation inherits the limit). The upgrade needs
// a few more fds in the old process (the pipes and pidfd of the new
// process, a socket pair, a memfd) and the new process needs its own: with
// too few, it must fail with a clear error, leaving the old process serving
// with everything; with enough, it must succeed.
func TestFdLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	for _, limit := range []int{20, 24, 28, 64} {
		t.Run(fmt.Sprintf("nofile=%d", limit), func(t *testing.T) {
			dir := t.TempDir()
			real := filepath.Join(dir, "bin", "baton-demo")
			if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
				t.Fatal(err)
			}
			upgradertest.Install(t, demoFault, real)
			wrapper := filepath.Join(dir, "wrapper")
			script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s \"$@\"\n", prlimit, limit, limit, real)
			upgradertest.InstallBytes(t, []byte(script), wrapper, 0o755)
			s := startServiceIn(t, dir, wrapper, nil)
			s.exe = real
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			// The clients' connections count against the limit too:
			// 8 clients, half on fresh connections.
			cfg := upgradertest.LoadConfig{URL: s.URL, Clients: 8, Fresh: 0.5, Post: 0.5, Rate: 2000}
			var u demotest.Upgrade
			r := underLoad(t, cfg, func() {
				waitTaskRuns(t, s, 2)
				u = s.Upgrade(t)
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			t.Logf("RLIMIT_NOFILE %d, old process at rest: %s; upgrade: %+v", limit, before, u)
			if u.Err == "" {
				if err := upgradertest.WaitExit(old, 15*time.Second); err != nil {
					t.Fatal(err)
				}
				stopAndWait(t, s.Proc)
				assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old, u.NewPid)
				assertOnlyAlive(t, s)
				return
			}
			if limit >= 64 {
				t.Errorf("upgrade failed with %d fds allowed: %s", limit, u.Err)
			}
			if got := s.Root(t); got.Pid != old {
				t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
			}
			if !strings.Contains(u.Err+childErrors(s, old), "too many open files") {
				t.Errorf("the failure does not say the fds ran out: %s", u.Err)
			}
			assertOnlyAlive(t, s, old)
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			assertOnlyAlive(t, s)
		})
	}
}

// waitRaw waits for a line of the service's output that is not a log line
// and contains substr: the error a process exits with.
func waitRaw(t *testing.T, s *service, substr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(childErrors(s, 0), substr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no process wrote %q:\n%s", substr, s.Logs)
		}
	}
}

// TestSnapshotTooLarge: the snapshot (about 170 KB with 2000 tasks) is
// larger than state.Options.MaxSize (baton-demo -state-max-bytes). When the
// old process's limit is exceeded it cannot capture the snapshot; when only
// the new process's is, it refuses what arrives. Either way the upgrade
// fails saying so, and the old process keeps everything. The service's
// relTasks tasks are enough for a pre-copy: the limit is hit in its first
// round, while the old process still runs, so it never freezes.
func TestSnapshotTooLarge(t *testing.T) {
	tests := []struct {
		name    string
		args    []string // for every generation
		newArgs string   // for the new process only
		wantErr string
	}{
		{name: "old-limit", args: []string{"-state-max-bytes", "65536"},
			wantErr: "this process could not send the first round of its state: pre-copy: send snapshot: write pre-copy of section"},
		{name: "new-limit", newArgs: "-state-max-bytes 65536",
			wantErr: "new process rejected the state: pre-copy: receive snapshot: state: snapshot too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, demoFault, nil, tt.args...)
			old := s.Pid(t)
			waitTaskRuns(t, s, 2)
			before := usageOf(t, s, old)
			real := filepath.Join(s.Dir, "baton-demo-real")
			r := underLoad(t, standardLoad(s.URL), func() {
				waitTaskRuns(t, s, 2)
				if tt.newArgs != "" {
					// The new process runs the same binary with
					// a smaller limit.
					upgradertest.Install(t, demoFault, real)
					script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" %s\n", real, tt.newArgs)
					upgradertest.InstallBytes(t, []byte(script), s.Bin, 0o755)
				}
				u := s.Upgrade(t)
				t.Logf("upgrade error: %s", u.Err)
				if !strings.Contains(u.Err, tt.wantErr) || !strings.Contains(u.Err, "65536") {
					t.Errorf("upgrade error %q, want one containing %q and the limit", u.Err, tt.wantErr)
				}
				waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "upgrade failed: still serving", Pid: old})
				if _, err := s.Logs.WaitFrom(0, 10*time.Millisecond, upgradertest.Match{Msg: "participants frozen", Pid: old}); err == nil {
					t.Errorf("the old process froze its tasks for a first round that could not be sent")
				}
				if got := s.Root(t); got.Pid != old {
					t.Fatalf("pid %d serves after the failure, want %d", got.Pid, old)
				}
				waitTaskRuns(t, s, 2)
			})
			assertNoFailures(t, r)
			assertUsageSettles(t, s, old, before)
			stopAndWait(t, s.Proc)
			assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), old)
			s.exe = real
			assertOnlyAlive(t, s)
		})
	}
}

// mountTmpfs mounts a tmpfs with the given options on a new directory and
// unmounts it when the test ends (after the service, registered later, has
// stopped). It needs root.
func mountTmpfs(t *testing.T, flags uintptr, opts string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): run as root outside a restricted container", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1<<14; i++ {
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			return path
		} else if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("%s never filled up", dir)
	return ""
}

// TestStateFileDiskFull: the state file lives on a 1 MiB tmpfs that fills
// up while the service runs, upgrades and stops. Writing the file fails
// with a clear error and leaves no temporary file behind; the handoff,
// which needs no disk, is not affected; the last file written stays whole,
// and a restart from it carries every task on without a gap (repeating the
// runs made since that file).
func TestStateFileDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 0, "size=1m,mode=0755")
	dir := t.TempDir()
	stateFile := filepath.Join(mnt, "demo.state")
	args := []string{"-state-file", stateFile, "-state-file-interval", "200ms"}
	s := startServiceIn(t, dir, demoFault, nil, args...)
	old := s.Pid(t)
	waitLine(t, s, 0, 5*time.Second, upgradertest.Match{Msg: "state file written", Pid: old})
	filler := fillDisk(t, mnt)
	mark := s.Logs.Len()

	noTemp := func() {
		t.Helper()
		if tmp, _ := filepath.Glob(filepath.Join(mnt, ".demo.state.tmp-*")); len(tmp) > 0 {
			t.Errorf("temporary files left behind: %v", tmp)
		}
	}
	var newPid int
	r := underLoad(t, standardLoad(s.URL), func() {
		line := waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "periodic state file write failed", Pid: old})
		if !strings.Contains(line.Fields["err"], "no space left on device") {
			t.Errorf("write failure: %q, want ENOSPC", line.Fields["err"])
		}
		noTemp()
		newPid = upgradeOK(t, s)
		line = waitLine(t, s, mark, 5*time.Second, upgradertest.Match{Msg: "periodic state file write failed", Pid: newPid})
		if !strings.Contains(line.Fields["err"], "no space left on device") {
			t.Errorf("write failure in the new process: %q", line.Fields["err"])
		}
		waitTaskRuns(t, s, 2)
	})
	assertNoFailures(t, r)

	// The stop cannot write the file either: it says so and exits 1.
	stopAndWait(t, s.Proc)
	line := waitLine(t, s, mark, 10*time.Second, upgradertest.Match{Msg: "state file not written", Pid: newPid})
	if !strings.Contains(line.Fields["err"], "no space left on device") {
		t.Errorf("stop: %q, want ENOSPC", line.Fields["err"])
	}
	waitRaw(t, s, "baton-demo: write state file")
	noTemp()
	assertOnlyAlive(t, s)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	q := startServiceIn(t, dir, demoFault, nil, args...)
	waitLine(t, q, 0, 5*time.Second, upgradertest.Match{Msg: "state restored from file"})
	waitTaskRuns(t, q, 2)
	stopAndWait(t, q.Proc)
	c := checkTaskLog(t, s.taskLog)
	t.Logf("task log: %s; the restart repeated %.1f runs per task, made after the disk filled", c, float64(c.repeats)/relTasks)
	if c.gaps != 0 {
		t.Errorf("task runs lost: %s; first: %s", c, c.example)
	}
	if c.repeats == 0 {
		t.Errorf("no run repeated: the restart did not start from the file written before the disk filled")
	}
	assertOnlyAlive(t, q)
}

// TestTmpdirNotWritable: TMPDIR names a read-only directory. The handoff
// needs no temporary file (the snapshot travels in a memfd), so upgrades
// work as usual.
func TestTmpdirNotWritable(t *testing.T) {
	ro := filepath.Join(t.TempDir(), "ro")
	if os.Getuid() == 0 {
		// Root writes through any mode: a read-only mount stops it.
		ro = mountTmpfs(t, unix.MS_RDONLY, "size=64k")
	} else if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o644); err == nil {
		t.Fatalf("%s is writable", ro)
	}
	s := startService(t, demoFault, []string{"TMPDIR=" + ro})
	old := s.Pid(t)
	waitTaskRuns(t, s, 2)
	var pids []int
	r := underLoad(t, standardLoad(s.URL), func() {
		for i := 0; i < 3; i++ {
			pids = append(pids, upgradeOK(t, s))
			waitTaskRuns(t, s, 2)
		}
	})
	assertNoFailures(t, r)
	assertStateIntact(t, s.Proc, r, 3)
	stopAndWait(t, s.Proc)
	assertTasksExact(t, relTasks, checkTaskLog(t, s.taskLog), append([]int{old}, pids...)...)
	assertOnlyAlive(t, s)
}
