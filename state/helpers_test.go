package state

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// blob is a participant whose state is a byte slice.
type blob struct {
	name     string
	version  uint32
	data     []byte // what Capture writes
	got      []byte // what Restore read
	restored int    // Restore calls
	writeMax int    // largest Write Capture makes; 0 means one Write
}

func (b *blob) participant() Participant {
	return Participant{
		Name:    b.name,
		Version: b.version,
		Capture: func(w io.Writer) error {
			step := b.writeMax
			if step <= 0 {
				step = max(1, len(b.data))
			}
			for p := b.data; len(p) > 0; {
				n := min(step, len(p))
				if _, err := w.Write(p[:n]); err != nil {
					return err
				}
				p = p[n:]
			}
			return nil
		},
		Restore: func(r io.Reader) error {
			b.restored++
			var err error
			b.got, err = io.ReadAll(r)
			return err
		},
	}
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	x := uint32(seed) + 1
	for i := range p {
		x = x*1664525 + 1013904223
		p[i] = byte(x >> 24)
	}
	return p
}

func newRegistry(t testing.TB, opts Options, parts ...*blob) *Registry {
	t.Helper()
	reg, err := NewRegistry(opts)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	for _, b := range parts {
		if err := reg.Register(b.participant()); err != nil {
			t.Fatalf("Register(%q): %v", b.name, err)
		}
	}
	return reg
}

// newRegistryWith returns a registry with the default options and parts.
func newRegistryWith(t testing.TB, parts ...Participant) *Registry {
	t.Helper()
	reg := newRegistry(t, Options{})
	for _, p := range parts {
		if err := reg.Register(p); err != nil {
			t.Fatalf("Register(%q): %v", p.Name, err)
		}
	}
	return reg
}

func snapshotOf(t testing.TB, reg *Registry) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := reg.WriteSnapshot(&buf)
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteSnapshot returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// rawSection is a section for rawSnapshot.
type rawSection struct {
	name    string
	version uint32
	data    []byte
}

// rawSnapshot encodes sections as given, bypassing the registry's checks
// (duplicate or invalid names), for decoder tests.
func rawSnapshot(t testing.TB, sections ...rawSection) []byte {
	t.Helper()
	return rawSnapshotFlags(t, 0, sections...)
}

// rawSnapshotFlags is rawSnapshot with the given header flags.
func rawSnapshotFlags(t testing.TB, flags uint16, sections ...rawSection) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := newEncoder(context.Background(), &buf, DefaultMaxSize)
	if err := e.header(currentBuild("raw"), flags); err != nil {
		t.Fatal(err)
	}
	for _, s := range sections {
		if _, err := e.section(s.name, s.version, func(w io.Writer) error {
			_, err := w.Write(s.data)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.finish(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// isAny reports whether err wraps one of targets.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// noPanic runs fn and fails the test if a panic escapes it: a participant's
// panic must come back as an error, never unwind through the registry.
func noPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	if v := escaped(fn); v != nil {
		t.Fatalf("%s: panic escaped the registry: %v", what, v)
	}
}

// escaped runs fn and returns the value of a panic that escaped it.
func escaped(fn func()) (v any) {
	defer func() { v = recover() }()
	fn()
	return nil
}
