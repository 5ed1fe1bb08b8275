package state

import (
	"encoding/gob"
	"encoding/json"
	"io"
	"log/slog"
	"math/bits"
	"sync"
)

// JSON returns a Participant that carries the application value *v across
// an upgrade, encoded with encoding/json, at schema version version. If mu
// is not nil it is held while *v is encoded and while it is replaced, so
// the value is consistent if the application guards it with mu too.
//
// Restore decodes into a new T and then assigns it to *v, so a failed
// Restore leaves *v as it was. The participant has no Freeze: changes made
// to *v after Capture stay in the old process, and since they do not go
// through the participant nobody sees them; keep the state in a Value
// instead to have them counted and logged. Register migrations for the
// section to read older versions; they see and return JSON bytes.
// encoding/json builds the whole encoding in memory before writing it:
// for state of hundreds of megabytes write a Participant that streams.
func JSON[T any](name string, version uint32, v *T, mu sync.Locker) Participant {
	return value(name, version, v, mu, encodeJSON, decodeJSON)
}

// Gob is like JSON but encodes with encoding/gob, which is more compact
// and faster for large values. As with JSON only exported fields are
// carried, and a T whose fields were added or removed still decodes;
// migrations see and return gob bytes.
func Gob[T any](name string, version uint32, v *T, mu sync.Locker) Participant {
	return value(name, version, v, mu, encodeGob, decodeGob)
}

func encodeJSON(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
func encodeGob(w io.Writer, v any) error  { return gob.NewEncoder(w).Encode(v) }
func decodeGob(r io.Reader, v any) error  { return gob.NewDecoder(r).Decode(v) }

func value[T any](name string, version uint32, v *T, mu sync.Locker, enc func(io.Writer, any) error, dec func(io.Reader, any) error) Participant {
	lock := func() func() {
		if mu == nil {
			return func() {}
		}
		mu.Lock()
		return mu.Unlock
	}
	return Participant{
		Name:    name,
		Version: version,
		Capture: func(w io.Writer) error {
			defer lock()()
			return enc(w, v)
		},
		Restore: func(r io.Reader) error {
			var n T
			if err := dec(r, &n); err != nil {
				return err
			}
			defer lock()()
			*v = n
			return nil
		},
	}
}

// A Value holds application state of type T that moves across an upgrade,
// like JSON or Gob, but whose writes go through it, so that a write the
// new process will never see is counted and logged instead of vanishing.
//
// During an upgrade the old process captures its state and then drains:
// handlers still answering may still write. Such a write, after Capture
// and until Thaw (the handoff was abandoned, so the next capture will hold
// it) or Restore, is a late write. It still applies in this process, which
// keeps serving consistently until it exits, but it is not in the
// snapshot: the new process does not have it. Late writes are not refused,
// since refusing them would fail the requests answered during the drain;
// they are counted (LateWrites) and logged as a warning at the 1st, 2nd,
// 4th, 8th... late write of a capture. A service that cannot lose them
// must stop writing before the capture (a Freeze of its own) or carry them
// some other way.
//
// The zero value holds the zero T and is ready to use. A Value must not be
// copied after first use. Its methods are safe for concurrent use.
type Value[T any] struct {
	// Logger receives the warnings about late writes. Nil means
	// slog.Default(). Set it before the Value is shared.
	Logger *slog.Logger

	mu       sync.Mutex
	v        T
	section  string // the name of the participant that last captured v
	captured bool   // Capture ran and neither Thaw nor Restore since
	late     uint64 // writes since that Capture
}

// Load returns the value. For a T holding maps, slices or pointers, the
// copy shares them: change them through Update, not in place.
func (x *Value[T]) Load() T {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.v
}

// Store replaces the value.
func (x *Value[T]) Store(v T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.v = v
	x.wroteLocked()
}

// Update calls fn with the value, under the Value's lock: fn may change it
// in place (a map entry) and must not call the Value's methods. Every call
// counts as a write.
func (x *Value[T]) Update(fn func(v *T)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	fn(&x.v)
	x.wroteLocked()
}

// LateWrites returns the number of writes made after the last Capture
// that no snapshot holds: what the new process will not have if this one
// exits now. It is zero before any Capture, and goes back to zero at
// Thaw, Restore and the next Capture. Read it when the old process exits
// to report what the upgrade lost.
func (x *Value[T]) LateWrites() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.late
}

func (x *Value[T]) wroteLocked() {
	if !x.captured {
		return
	}
	x.late++
	// Powers of two: the first late write is always reported, and a
	// drain of a million writes logs twenty lines, not a million.
	if bits.OnesCount64(x.late) == 1 {
		log := x.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("state: value written after its capture: the new process will not see this write",
			"section", x.section, "late_writes", x.late)
	}
}

// JSON returns the Participant that carries the value, encoded with
// encoding/json, as section name at schema version version (see JSON).
func (x *Value[T]) JSON(name string, version uint32) Participant {
	return x.participant(name, version, encodeJSON, decodeJSON)
}

// Gob returns the Participant that carries the value, encoded with
// encoding/gob, as section name at schema version version (see Gob).
func (x *Value[T]) Gob(name string, version uint32) Participant {
	return x.participant(name, version, encodeGob, decodeGob)
}

func (x *Value[T]) participant(name string, version uint32, enc func(io.Writer, any) error, dec func(io.Reader, any) error) Participant {
	return Participant{
		Name:    name,
		Version: version,
		Capture: func(w io.Writer) error {
			x.mu.Lock()
			defer x.mu.Unlock()
			if err := enc(w, &x.v); err != nil {
				return err
			}
			// In the critical section of the encoding: every write
			// is either in the snapshot or counted late.
			x.section, x.captured, x.late = name, true, 0
			return nil
		},
		Thaw: func() {
			x.mu.Lock()
			defer x.mu.Unlock()
			x.captured, x.late = false, 0
		},
		Restore: func(r io.Reader) error {
			var n T
			if err := dec(r, &n); err != nil {
				return err
			}
			x.mu.Lock()
			defer x.mu.Unlock()
			x.v, x.captured, x.late = n, false, 0
			return nil
		},
	}
}
