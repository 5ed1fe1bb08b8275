// Command precopysvc is a service for the end-to-end tests of the pre-copy
// handoff: its state is a table of -entries numbers that a writer changes
// all the time (step i sets entry i mod N to i), and that moves to the new
// process in rounds (state.Participant.PreCopy): the whole table while the
// writer runs, then, still running, the entries it changed during the round
// before, as long as the upgrader asks for another round, and after the
// freeze the entries it changed since. Whatever the rounds did, the table
// a process holds must be the one the writer left at some step L: entry k
// holds the last i <= L with i mod N = k. Each process checks that after its restore and logs it ("table
// restored": last, consistent); the old process logs the step it froze at
// ("table frozen"). GET / answers "pid last".
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/batonhq/baton/upgrader"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "precopysvc:", err)
		os.Exit(1)
	}
}

// table is the service's state: vals[k] is the last step i with i mod
// len(vals) = k, last the last step.
type table struct {
	log *slog.Logger

	mu       sync.Mutex
	vals     []uint64
	last     uint64
	frozen   bool
	tracking bool
	dirty    map[int]bool
}

// step makes the writer's next n changes, unless frozen.
func (t *table) step(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.frozen {
		return
	}
	for range n {
		t.last++
		k := int(t.last % uint64(len(t.vals)))
		t.vals[k] = t.last
		if t.tracking {
			t.dirty[k] = true
		}
	}
}

// consistent reports whether the table is the writer's at its last step.
func (t *table) consistent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := uint64(len(t.vals))
	r := t.last % n
	for k := range n {
		var want uint64
		switch {
		case k <= r && t.last >= r-k:
			want = t.last - r + k
		case k > r && t.last+k >= r+n:
			want = t.last - r - n + k
		}
		if t.vals[k] != want {
			return false
		}
	}
	return true
}

// chunk is how many entries a capture writes per hold of the lock, so that
// the writer runs on while the first round is captured.
const chunk = 4096

// writeAll writes last and every entry, chunk by chunk, letting the writer
// in between.
func (t *table) writeAll(w io.Writer) error {
	t.mu.Lock()
	n := len(t.vals)
	t.mu.Unlock()
	buf := make([]byte, 0, 8*(chunk+2))
	buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	for off := 0; off < n; off += chunk {
		t.mu.Lock()
		for _, v := range t.vals[off:min(off+chunk, n)] {
			buf = binary.BigEndian.AppendUint64(buf, v)
		}
		t.mu.Unlock()
		if _, err := w.Write(buf); err != nil {
			return err
		}
		buf = buf[:0]
	}
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, last))
	return err
}

// readAll reads what writeAll wrote into the table.
func (t *table) readAll(r io.Reader) error {
	var n uint64
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n != uint64(len(t.vals)) {
		return fmt.Errorf("a table of %d entries, this process has %d", n, len(t.vals))
	}
	if err := binary.Read(r, binary.BigEndian, t.vals); err != nil {
		return err
	}
	return binary.Read(r, binary.BigEndian, &t.last)
}

func (t *table) participant() state.Participant {
	return state.Participant{
		Name:    "svc.table",
		Version: 1,
		Freeze: func(context.Context) error {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.frozen = true
			t.log.Info("table frozen", "last", t.last)
			return nil
		},
		Thaw: func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.frozen = false
			t.log.Info("table thawed", "last", t.last)
		},
		Capture: t.writeAll,
		Restore: t.readAll,
		Reset: func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			clear(t.vals)
			t.last = 0
		},
		PreCopy: &state.PreCopy{
			Want: func() bool { return true },
			Capture: func(w io.Writer) error {
				t.mu.Lock()
				t.tracking, t.dirty = true, make(map[int]bool)
				t.mu.Unlock()
				return t.writeAll(w)
			},
			Delta: func(w io.Writer) error {
				t.mu.Lock()
				defer t.mu.Unlock()
				buf := binary.BigEndian.AppendUint64(nil, uint64(len(t.dirty)))
				for k := range t.dirty {
					buf = binary.BigEndian.AppendUint64(buf, uint64(k))
					buf = binary.BigEndian.AppendUint64(buf, t.vals[k])
				}
				buf = binary.BigEndian.AppendUint64(buf, t.last)
				// A middle round (running) starts the tracking over;
				// the last (frozen) ends it.
				t.tracking, t.dirty = !t.frozen, nil
				if t.tracking {
					t.dirty = make(map[int]bool)
				}
				_, err := w.Write(buf)
				return err
			},
			Stop: func() {
				t.mu.Lock()
				defer t.mu.Unlock()
				t.tracking, t.dirty = false, nil
				t.log.Info("pre-copy stopped", "last", t.last)
			},
			Restore: t.readAll,
			RestoreDelta: func(r io.Reader) error {
				var n uint64
				if err := binary.Read(r, binary.BigEndian, &n); err != nil {
					return err
				}
				t.mu.Lock()
				defer t.mu.Unlock()
				for range n {
					var kv [2]uint64
					if err := binary.Read(r, binary.BigEndian, &kv); err != nil {
						return err
					}
					if kv[0] >= uint64(len(t.vals)) {
						return fmt.Errorf("entry %d of %d", kv[0], len(t.vals))
					}
					t.vals[kv[0]] = kv[1]
				}
				return binary.Read(r, binary.BigEndian, &t.last)
			},
		},
	}
}

func run() error {
	pidfile := flag.String("pidfile", "", "pid file")
	entries := flag.Int("entries", 200000, "entries in the table")
	rate := flag.Int("rate", 20, "changes the writer makes every millisecond")
	flag.Parse()
	if *entries < 1 {
		return errors.New("-entries must be positive")
	}
	hups := make(chan os.Signal, 2)
	signal.Notify(hups, syscall.SIGHUP)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()
	log = log.With("generation", u.Generation())
	t := &table{log: log, vals: make([]uint64, *entries)}
	if err := u.State().Register(t.participant()); err != nil {
		return err
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if _, err := u.Restore(context.Background()); err != nil {
		return err
	}
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	log.Info("table restored", "last", last, "consistent", t.consistent())
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			t.step(*rate)
		}
	}()
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		last := t.last
		t.mu.Unlock()
		fmt.Fprintln(w, os.Getpid(), last)
	})}, ln)
	if err := u.Ready(); err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().(*net.TCPAddr).String())
	// Each SIGHUP upgrades; the test ends every generation by SIGKILL.
	go func() {
		for range hups {
			if res, err := u.Upgrade(context.Background()); err != nil {
				log.Error("upgrade failed: still serving", "err", err)
			} else {
				log.Info("upgraded", "new_pid", res.Pid, "pre_copy_bytes", res.PreCopyBytes, "pre_copy_rounds", res.PreCopyRounds, "state_bytes", res.StateBytes)
			}
		}
	}()
	<-u.Exit()
	return u.Shutdown(context.Background())
}
