// Command handoffbench is a service whose only state is a blob of -size
// bytes: the benchmark in tests upgrades it and measures the handoff of
// that state across two real processes, from the start of the capture in
// the old process to the end of the restore in the new one.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/batonhq/baton/upgrader"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "handoffbench:", err)
		os.Exit(1)
	}
}

func run() error {
	size := flag.Int64("size", 64<<20, "state size in `bytes`")
	pidfile := flag.String("pidfile", "", "pid file")
	flag.Parse()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())

	reg, err := state.NewRegistry(state.Options{})
	if err != nil {
		return err
	}
	if err := reg.Register(newBlob(*size, log).participant()); err != nil {
		return err
	}
	u, err := upgrader.New(upgrader.Options{State: reg, PIDFile: *pidfile, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()
	if err := u.Ready(); err != nil {
		return err
	}
	log.Info("serving")
	return serveSignals(u, sigs, log)
}

// blob is the service's state: size bytes, handed over whole.
type blob struct {
	b   []byte
	log *slog.Logger
}

func newBlob(size int64, log *slog.Logger) *blob {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return &blob{b: b, log: log}
}

// participant hands the blob over. Its section starts with the capture's
// start time, so the new process can tell how long the whole handoff took.
func (bl *blob) participant() state.Participant {
	return state.Participant{Name: "bench.blob", Version: 1, Capture: bl.capture, Restore: bl.restore}
}

func (bl *blob) capture(w io.Writer) error {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixNano()))
	if _, err := w.Write(ts[:]); err != nil {
		return err
	}
	_, err := w.Write(bl.b)
	return err
}

// restore reads the blob and logs the handoff's length, from the start of
// the capture in the old process to now.
func (bl *blob) restore(r io.Reader) error {
	var ts [8]byte
	if _, err := io.ReadFull(r, ts[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(r, bl.b); err != nil {
		return err
	}
	if n, _ := r.Read(make([]byte, 1)); n != 0 {
		return errors.New("state longer than -size")
	}
	took := time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(ts[:]))))
	bl.log.Info("handoff measured", "bytes", len(bl.b), "handoff_ns", took.Nanoseconds())
	return nil
}

// serveSignals upgrades on SIGHUP, in the background, and shuts down on
// SIGTERM or once a new process has taken over.
func serveSignals(u *upgrader.Upgrader, sigs <-chan os.Signal, log *slog.Logger) error {
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				return u.Shutdown(context.Background())
			}
			go func() {
				if _, err := u.Upgrade(context.Background()); err != nil {
					log.Error("upgrade failed: still serving", "err", err)
				}
			}()
		case <-u.Exit():
			return u.Shutdown(context.Background())
		}
	}
}
