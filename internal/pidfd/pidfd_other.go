//go:build !linux

package pidfd

import (
	"context"
	"syscall"
)

// Process is a process held by a pidfd; elsewhere than on Linux there is
// none to hold.
type Process struct {
	// Pid is the process's pid when it was opened.
	Pid int
}

// Open returns ErrNotSupported.
func Open(pid int) (*Process, error) { return nil, ErrNotSupported }

// Wait returns ErrNotSupported.
func (p *Process) Wait(ctx context.Context) error { return ErrNotSupported }

// Exited reports false.
func (p *Process) Exited() bool { return false }

// Signal returns ErrNotSupported.
func (p *Process) Signal(sig syscall.Signal) error { return ErrNotSupported }

// Close does nothing.
func (p *Process) Close() error { return nil }
