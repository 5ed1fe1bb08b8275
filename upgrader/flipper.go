package upgrader

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"

	"github.com/cloudflare/tableflip"
)

// flipper is the part of *tableflip.Upgrader that Upgrader uses: the seam
// through which unit tests drive the lifecycle without starting processes.
type flipper interface {
	Listener(network, addr string) (net.Listener, error)
	PacketConn(network, addr string) (net.PacketConn, error)
	File(name string) (*os.File, error)
	AddFile(name string, f *os.File) error
	AddListener(network, addr string, ln tableflip.Listener) error
	AddPacketConn(network, addr string, pc tableflip.PacketConn) error
	Ready() error
	Upgrade() error
	Stop()
	HasParent() bool
	WaitForParent(ctx context.Context) error
}

// classify maps an error from tableflip's Upgrade to a sentinel and the
// child's exit status. tableflip v1.2.3 formats its errors with %s, so the
// cause survives only as text; the mapping is pinned by the end-to-end tests
// that make a child exit, hang and fail to start.
func classify(err error) (reason error, exitStatus string) {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "can't start child"):
		return errors.Join(ErrStartFailed, err), ""
	case strings.Contains(msg, " timed out"):
		return ErrReadyTimeout, ""
	case strings.Contains(msg, " exited: "):
		return ErrChildExited, msg[strings.Index(msg, " exited: ")+len(" exited: "):]
	case strings.HasSuffix(msg, " exited"):
		return ErrChildExited, "exit status 0"
	case msg == "terminating":
		return ErrClosed, ""
	}
	return errors.Join(ErrChildExited, err), ""
}
