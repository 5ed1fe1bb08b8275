package pidfd

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a process held by a pidfd. Its methods may be called from
// several goroutines, but not after Close.
type Process struct {
	// Pid is the process's pid when it was opened.
	Pid int
	fd  int
}

// Open opens a pidfd for pid. It returns an error wrapping ErrNoProcess if
// there is no such process. The caller must Close the Process.
func Open(pid int) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	if errors.Is(err, unix.ENOSYS) {
		return nil, ErrNotSupported
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd: open pid %d: %w", pid, err)
	}
	return &Process{Pid: pid, fd: fd}, nil
}

// Wait waits until the process has exited (it need not have been reaped)
// or ctx is done, in which case the error wraps ctx.Err().
func (p *Process) Wait(ctx context.Context) error {
	for {
		wait := pollSlice
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d))
		}
		exited, err := p.poll(max(wait, 0))
		if err != nil || exited {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pidfd: pid %d still running: %w", p.Pid, ctx.Err())
		}
	}
}

// Exited reports whether the process has exited, without waiting.
func (p *Process) Exited() bool {
	exited, err := p.poll(0)
	return err == nil && exited
}

// poll reports whether the pidfd became readable, which it does when the
// process exits, within d (rounded up to a millisecond).
func (p *Process) poll(d time.Duration) (bool, error) {
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("pidfd: poll pid %d: %w", p.Pid, err)
		}
		return n > 0, nil
	}
}

// Signal sends sig to the process. Once it has exited this fails with
// ESRCH, even if its pid now names another process.
func (p *Process) Signal(sig syscall.Signal) error {
	return unix.PidfdSendSignal(p.fd, sig, nil, 0)
}

// Close releases the pidfd.
func (p *Process) Close() error {
	return unix.Close(p.fd)
}
