//go:build unix

package state

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// socketPair returns the two ends of a Unix stream socketpair, like the
// one the new process inherits.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close() // FileConn made its own copy
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

type sendResult struct {
	n   int64
	err error
}

// goSend runs send in a goroutine; the result arrives on the channel.
func goSend(send func() (int64, error)) <-chan sendResult {
	ch := make(chan sendResult, 1)
	go func() {
		n, err := send()
		ch <- sendResult{n, err}
	}()
	return ch
}

func TestSendReceive(t *testing.T) {
	senders := []struct {
		name string
		send func(context.Context, *net.UnixConn, *Registry) (int64, error)
	}{
		{"Send", Send},
		{"SendStream", SendStream},
	}
	for _, s := range senders {
		t.Run(s.name, func(t *testing.T) {
			old, new := socketPair(t)
			src := &blob{name: "a", data: pattern(3*maxChunk+1, 8)}
			reg := newRegistry(t, Options{}, src, &blob{name: "b", data: []byte("b")})
			done := goSend(func() (int64, error) {
				n, err := s.send(context.Background(), old, reg)
				if err == nil {
					// The upgrader's handshake goes on over the conn.
					_, err = old.Write([]byte("ready?"))
				}
				return n, err
			})
			dst, b := &blob{name: "a"}, &blob{name: "b"}
			info, err := Receive(context.Background(), new, newRegistry(t, Options{}, dst, b))
			res := <-done
			if err != nil || res.err != nil {
				t.Fatalf("Receive = %v, send = %v", err, res.err)
			}
			if !bytes.Equal(dst.got, src.data) || string(b.got) != "b" {
				t.Errorf("restored %d bytes and %q", len(dst.got), b.got)
			}
			if info.Bytes != res.n {
				t.Errorf("received %d bytes, sent %d", info.Bytes, res.n)
			}
			next := make([]byte, 6)
			if _, err := io.ReadFull(new, next); err != nil || string(next) != "ready?" {
				t.Errorf("after Receive read %q, %v; want the next message", next, err)
			}
		})
	}
}

func TestReceiveAbort(t *testing.T) {
	_, new := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Receive(ctx, new, newRegistry(t, Options{}))
		done <- err
	}()
	cancel() // nothing will ever arrive: only the abort ends Receive
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Receive = %v, want context.Canceled", err)
	}
}

func TestSendAbortStream(t *testing.T) {
	old, _ := socketPair(t) // nobody reads: the socket buffer fills
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	reg := newRegistry(t, Options{})
	reg.Register(Participant{
		Name: "a",
		Capture: func(w io.Writer) error {
			close(started)
			_, err := w.Write(pattern(16*maxChunk, 1))
			return err
		},
		Restore: func(io.Reader) error { return nil },
	})
	done := goSend(func() (int64, error) { return SendStream(ctx, old, reg) })
	<-started
	// Send is stopped either between chunks or, blocked in a write to
	// the full socket, by the deadline the abort sets.
	cancel()
	if res := <-done; !errors.Is(res.err, context.Canceled) {
		t.Errorf("Send = %v, want context.Canceled", res.err)
	}
}

func TestReceivePeerGone(t *testing.T) {
	old, new := socketPair(t)
	old.Close()
	_, err := Receive(context.Background(), new, newRegistry(t, Options{}))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Receive = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestSendPeerGone(t *testing.T) {
	old, new := socketPair(t)
	new.Close()
	_, err := Send(context.Background(), old, newRegistry(t, Options{}, &blob{name: "a", data: pattern(100, 1)}))
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Send = %v, want EPIPE", err)
	}
}
