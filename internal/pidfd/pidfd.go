// Package pidfd waits for and signals processes through pidfds. A pid names
// whatever process holds the number now; a pidfd names the process it was
// opened for until it is closed, even after that process has exited and
// its pid has gone to another program. So a wait on a pidfd sees the exit
// of the right process, and a signal through one never reaches another
// program, whether or not the caller is the process's parent.
package pidfd

import (
	"context"
	"errors"
	"time"
)

// pollSlice bounds one poll of a wait, so that a cancelled context is seen
// within it; an exit is seen at once, whatever the slice.
const pollSlice = 50 * time.Millisecond

// Wait waits until the process pid has exited, up to timeout. A pid that
// does not exist has exited. At the timeout the error wraps
// context.DeadlineExceeded.
func Wait(pid int, timeout time.Duration) error {
	p, err := Open(pid)
	if errors.Is(err, ErrNoProcess) {
		return nil
	}
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Wait(ctx)
}
