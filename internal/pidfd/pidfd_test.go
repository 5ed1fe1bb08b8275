package pidfd

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// sleeper starts a real process that runs until it is killed.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// open opens a pidfd for pid, closed when the test ends.
func open(t *testing.T, pid int) *Process {
	t.Helper()
	p, err := Open(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestWaitTimesOutOnARunningProcess(t *testing.T) {
	cmd := sleeper(t)
	if err := Wait(cmd.Process.Pid, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running process: %v, want DeadlineExceeded", err)
	}
}

// TestSignalAndWait: a signal through the pidfd ends the process, and the
// wait sees the exit before the parent reaps it.
func TestSignalAndWait(t *testing.T) {
	cmd := sleeper(t)
	p := open(t, cmd.Process.Pid)
	if p.Exited() {
		t.Fatal("Exited before the signal")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("Wait after SIGTERM: %v", err)
	}
	if !p.Exited() {
		t.Error("Exited is false after Wait returned")
	}
	// Reaped now: the pid may go to another program, the pidfd still
	// means the dead process.
	cmd.Wait()
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Signal to a reaped process: %v, want ESRCH", err)
	}
}

func TestWaitCancelled(t *testing.T) {
	cmd := sleeper(t)
	p := open(t, cmd.Process.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: %v, want Canceled", err)
	}
}

func TestNoProcess(t *testing.T) {
	// Above any pid_max Linux allows (2^22): no process has it.
	const pid = 1 << 30
	if _, err := Open(pid); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Open(%d): %v, want ErrNoProcess", pid, err)
	}
	if err := Wait(pid, time.Second); err != nil {
		t.Fatalf("Wait(%d): %v, want nil: a process that does not exist has exited", pid, err)
	}
}
