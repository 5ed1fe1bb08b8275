//go:build !linux

package state

import (
	"context"
	"fmt"
	"io"
	"net"
)

// Without memfd the snapshot always streams over the socket.

func send(ctx context.Context, conn *net.UnixConn, write writeFunc) (int64, error) {
	return sendStream(ctx, conn, write)
}

func receive(ctx context.Context, conn *net.UnixConn, reg *Registry, mode readMode) (Info, error) {
	hdr := make([]byte, transportHeaderLen)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return Info{}, fmt.Errorf("read transport header: %w", err)
	}
	h, err := parseTransportHeader(hdr)
	if err != nil {
		return Info{}, err
	}
	if h.kind != kindStream {
		return Info{}, fmt.Errorf("%w: the peer sent a memfd", ErrNotSupported)
	}
	return receiveStream(ctx, conn, reg, mode)
}
