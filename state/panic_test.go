//go:build unix

package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// panicky is a participant that records its calls and panics in the
// callback named by panicIn, as a nil-map write does.
type panicky struct {
	name    string
	panicIn string // "Freeze", "Thaw", "Capture" or "Restore"
	calls   []string
}

func (p *panicky) participant() Participant {
	boom := func(cb string) {
		p.calls = append(p.calls, cb)
		if p.panicIn == cb {
			var m map[string]int
			m[p.name]++ // assignment to entry in nil map
		}
	}
	return Participant{
		Name:    p.name,
		Version: 1,
		Freeze:  func(context.Context) error { boom("Freeze"); return nil },
		Thaw:    func() { boom("Thaw") },
		Capture: func(w io.Writer) error {
			boom("Capture")
			_, err := io.WriteString(w, p.name)
			return err
		},
		Restore: func(r io.Reader) error {
			boom("Restore")
			_, err := io.ReadAll(r)
			return err
		},
	}
}

func panickyRegistry(t *testing.T, parts ...*panicky) *Registry {
	t.Helper()
	return panickyRegistryLog(t, io.Discard, parts...)
}

// panickyRegistryLog is panickyRegistry logging to log.
func panickyRegistryLog(t *testing.T, log io.Writer, parts ...*panicky) *Registry {
	t.Helper()
	reg, err := NewRegistry(Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if err := reg.Register(p.participant()); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// checkPanicError checks that err reports the panic of callback cb of the
// participant name, with its value and the stack of the panic.
func checkPanicError(t *testing.T, err error, name, cb string) {
	t.Helper()
	if !errors.Is(err, ErrParticipantPanicked) {
		t.Fatalf("error %v does not wrap ErrParticipantPanicked", err)
	}
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *PanicError", err)
	}
	if pe.Participant != name || pe.Callback != cb {
		t.Errorf("PanicError names %q.%s, want %q.%s", pe.Participant, pe.Callback, name, cb)
	}
	if rerr, ok := pe.Value.(error); !ok || !strings.Contains(rerr.Error(), "nil map") {
		t.Errorf("PanicError.Value = %v, want the runtime's nil-map error", pe.Value)
	}
	// The stack shows where the participant panicked, for the log.
	if !bytes.Contains(pe.Stack, []byte("panicky")) {
		t.Errorf("PanicError.Stack does not show the panicking function:\n%s", pe.Stack)
	}
}

func TestFreezePanicThawsTheFrozen(t *testing.T) {
	a, b, c := &panicky{name: "a"}, &panicky{name: "b", panicIn: "Freeze"}, &panicky{name: "c"}
	var log bytes.Buffer
	reg := panickyRegistryLog(t, &log, a, b, c)
	var err error
	noPanic(t, "Freeze", func() { err = reg.Freeze(context.Background()) })
	checkPanicError(t, err, "b", "Freeze")
	if !strings.Contains(log.String(), "participant=b callback=Freeze") || !strings.Contains(log.String(), "panicky") {
		t.Errorf("the log does not report the panic with its stack:\n%s", log.String())
	}
	if got := strings.Join(a.calls, ","); got != "Freeze,Thaw" {
		t.Errorf("a saw %s, want Freeze,Thaw: those frozen before the panic are thawed", got)
	}
	// The participant that panicked did not finish freezing: its Thaw
	// could undo what it never did (unlock a mutex it never locked).
	if got := strings.Join(b.calls, ","); got != "Freeze" {
		t.Errorf("b saw %s, want Freeze only", got)
	}
	if len(c.calls) != 0 {
		t.Errorf("c saw %v, want nothing", c.calls)
	}
	b.panicIn = ""
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatalf("Freeze after the failed one: %v (the registry must not stay frozen)", err)
	}
}

func TestThawPanicThawsTheOthers(t *testing.T) {
	a, b, c := &panicky{name: "a"}, &panicky{name: "b", panicIn: "Thaw"}, &panicky{name: "c"}
	reg := panickyRegistry(t, a, b, c)
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	var err error
	noPanic(t, "Thaw", func() { err = reg.Thaw() })
	checkPanicError(t, err, "b", "Thaw")
	for _, p := range []*panicky{a, b, c} {
		if got := strings.Join(p.calls, ","); got != "Freeze,Thaw" {
			t.Errorf("%s saw %s, want Freeze,Thaw: a panicking Thaw does not stop the others'", p.name, got)
		}
	}
	if err := reg.Freeze(context.Background()); err != nil {
		t.Fatalf("Freeze after Thaw: %v", err)
	}
}

func TestCapturePanicIsAnError(t *testing.T) {
	a, b := &panicky{name: "a"}, &panicky{name: "b", panicIn: "Capture"}
	reg := panickyRegistry(t, a, b)
	var err error
	noPanic(t, "WriteSnapshot", func() { _, err = reg.WriteSnapshot(io.Discard) })
	checkPanicError(t, err, "b", "Capture")

	// The same through Send: the old process keeps running.
	c1, c2 := socketPair(t)
	sent := goSend(func() (int64, error) {
		var n int64
		var err error
		if v := escaped(func() { n, err = Send(context.Background(), c1, reg) }); v != nil {
			err = fmt.Errorf("panic escaped Send: %v", v)
		}
		c1.Close() // the receiver sees the end of a broken snapshot
		return n, err
	})
	recv := panickyRegistry(t, &panicky{name: "a"}, &panicky{name: "b"})
	if _, err := Receive(context.Background(), c2, recv); err == nil {
		t.Error("Receive of a snapshot whose Capture panicked succeeded")
	}
	checkPanicError(t, (<-sent).err, "b", "Capture")
}

func TestRestorePanicIsAnError(t *testing.T) {
	data := snapshotOf(t, panickyRegistry(t, &panicky{name: "a"}, &panicky{name: "b"}))
	reg := panickyRegistry(t, &panicky{name: "a"}, &panicky{name: "b", panicIn: "Restore"})
	var err error
	noPanic(t, "ReadSnapshot", func() { _, err = reg.ReadSnapshot(bytes.NewReader(data)) })
	checkPanicError(t, err, "b", "Restore")

	c1, c2 := socketPair(t)
	sent := goSend(func() (int64, error) {
		return Send(context.Background(), c1, panickyRegistry(t, &panicky{name: "a"}, &panicky{name: "b"}))
	})
	noPanic(t, "Receive", func() { _, err = Receive(context.Background(), c2, reg) })
	checkPanicError(t, err, "b", "Restore")
	if r := <-sent; r.err != nil {
		t.Errorf("Send: %v", r.err)
	}
}
