//go:build !linux

package upgrader

import (
	"io"

	"github.com/batonhq/baton/internal/procfd"
)

// strayListeners needs /proc/self/fd; elsewhere the check is skipped (the
// caller logs the error at debug level).
func strayListeners(known []io.Closer) ([]string, error) {
	return nil, procfd.ErrNotSupported
}
