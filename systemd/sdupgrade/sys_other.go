//go:build !linux

package sdupgrade

import (
	"net"
	"os"

	"github.com/batonhq/baton/systemd"
)

// systemd runs only on Linux: elsewhere no process has a handover pipe to
// poll or a listener to store, and these fail with systemd.ErrNotSupported.

func pollable(f *os.File) (*os.File, error) {
	f.Close()
	return nil, systemd.ErrNotSupported
}

type openSocket struct {
	file *os.File
	ino  uint64
	addr *net.TCPAddr
}

func tcpListeners() ([]openSocket, error) { return nil, systemd.ErrNotSupported }
