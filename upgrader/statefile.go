package upgrader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"golang.org/x/sys/unix"
)

// checkStateFileDir checks, at start, that the state file's directory
// exists and can be written: the file is written atomically beside its
// final name at every stop, and a directory that is missing would only be
// found out then, when the state is lost.
func checkStateFileDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s: %w (create the directory, or choose a state file in one that exists)", ErrStateFileDir, path, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s: %s is not a directory: %w", ErrStateFileDir, path, dir, syscall.ENOTDIR)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("%w: %s: cannot write in %s: %w", ErrStateFileDir, path, dir, err)
	}
	return nil
}

// restoreFile restores from the durable snapshot, if one is configured.
func (u *Upgrader) restoreFile() (state.Info, error) {
	if u.opts.StateFile == "" {
		return state.Info{}, nil
	}
	info, err := state.ReadFile(u.opts.StateFile, u.reg)
	var aside *state.MovedAsideError
	switch {
	case err == nil:
		u.log.Info("state restored from file", "path", u.opts.StateFile, "bytes", info.Bytes)
		return info, nil
	case errors.Is(err, state.ErrNoSnapshot):
		u.log.Info("no state file: starting fresh", "path", u.opts.StateFile)
		return state.Info{}, nil
	case errors.Is(err, state.ErrPartialRestore):
		// Checked first: a failed undo wraps ErrMovedAside too. Never serve
		// on a mix of restored and initial state.
		return info, fmt.Errorf("restore state file: %w", err)
	case errors.Is(err, state.ErrUnknownVersion) || errors.Is(err, state.ErrUnknownSection) || errors.Is(err, state.ErrFormatVersion):
		// Not damage: a newer release wrote it. Starting fresh would
		// overwrite it at the next write, so refuse, and keep it.
		u.log.Error("state file is from a release this binary cannot read: kept in place; run a release that reads it, or remove the file to start fresh",
			"path", u.opts.StateFile, "err", err)
		return info, fmt.Errorf("restore state file: %w", err)
	case errors.As(err, &aside) && !u.opts.RefuseCorruptStateFile:
		u.log.Error("state file unusable: moved aside, starting fresh", "path", aside.Path, "moved_to", aside.NewPath, "err", aside.Err)
		return state.Info{}, nil
	}
	return info, fmt.Errorf("restore state file: %w", err)
}

// writeStateFile freezes the participants and writes the durable snapshot.
// With thaw, the participants carry on afterwards (the periodic write);
// without, they stay frozen (the process is stopping).
func (u *Upgrader) writeStateFile(ctx context.Context, thaw bool) error {
	if u.opts.StateFile == "" {
		return nil
	}
	start := time.Now()
	u.stateMu.Lock()
	defer u.stateMu.Unlock()
	if err := u.reg.Freeze(ctx); err != nil {
		return fmt.Errorf("write state file: freeze: %w: %w", err, ErrStateFile)
	}
	if thaw {
		defer func() {
			if err := u.reg.Thaw(); err != nil {
				u.log.Error("thaw after the state file write: a participant panicked; the others were thawed", "err", err)
			}
		}()
	}
	n, err := state.WriteFile(u.opts.StateFile, u.reg)
	if err != nil {
		return fmt.Errorf("write state file: %w: %w", err, ErrStateFile)
	}
	u.log.Info("state file written", "path", u.opts.StateFile, "bytes", n, "took", time.Since(start))
	return nil
}

// writeFinalStateFile writes the state file of a stop. Freezing runs under
// a budget of its own, not the drain's context: the drain may have spent
// all of that on a slow client, and the participants freeze the same way
// whatever the drain did.
func (u *Upgrader) writeFinalStateFile(drainCtx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(drainCtx), u.opts.StateFileTimeout)
	defer cancel()
	return u.writeStateFile(ctx, false)
}

// statePeriodically writes the state file every interval until stop closes.
func (u *Upgrader) statePeriodically(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		u.mu.Lock()
		busy := u.upgrading || u.upgraded || u.closed
		u.mu.Unlock()
		if busy {
			continue // the state is being handed over, or is gone
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		if err := u.writeStateFile(ctx, true); err != nil {
			u.log.Error("periodic state file write failed", "err", err)
		}
		cancel()
	}
}
