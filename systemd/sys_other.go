//go:build !linux

package systemd

import (
	"time"
)

// systemd runs only on Linux. Elsewhere NOTIFY_SOCKET and LISTEN_* are not
// expected to be set; if they are, the calls that would use them fail with
// ErrNotSupported instead of guessing.

func sendNotify(string, []byte, []int, time.Duration) error { return ErrNotSupported }

func monotonicNow() (time.Duration, error) { return 0, ErrNotSupported }

func openFileLimit() (uint64, error) { return 0, ErrNotSupported }

func checkFDOpen(int) error { return ErrNotSupported }

func adoptFD(int) error { return ErrNotSupported }

func socketInfo(int) (int, bool, error) { return 0, false, ErrNotSupported }
