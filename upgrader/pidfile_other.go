//go:build !linux

package upgrader

import (
	"errors"
	"os"
)

var errNoPreparedPID = errors.New("unnamed files are Linux's")

// openPreparedPID is Linux's (O_TMPFILE): elsewhere the pid file is written
// when the process becomes ready.
func openPreparedPID(dir string, pid int) (*os.File, error) { return nil, errNoPreparedPID }

func linkPreparedPID(f *os.File, path string) error { return errNoPreparedPID }
