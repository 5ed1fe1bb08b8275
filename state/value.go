package state

import (
	"encoding/gob"
	"encoding/json"
	"io"
	"sync"
)

// JSON returns a Participant that carries the application value *v across
// an upgrade, encoded with encoding/json, at schema version version. If mu
// is not nil it is held while *v is encoded and while it is replaced, so
// the value is consistent if the application guards it with mu too.
//
// Restore decodes into a new T and then assigns it to *v, so a failed
// Restore leaves *v as it was. The participant has no Freeze: changes made
// to *v after Capture stay in the old process. Register migrations for the
// section to read older versions; they see and return JSON bytes.
// encoding/json builds the whole encoding in memory before writing it:
// for state of hundreds of megabytes write a Participant that streams.
func JSON[T any](name string, version uint32, v *T, mu sync.Locker) Participant {
	return value(name, version, v, mu,
		func(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) },
		func(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) })
}

// Gob is like JSON but encodes with encoding/gob, which is more compact
// and faster for large values. As with JSON only exported fields are
// carried, and a T whose fields were added or removed still decodes;
// migrations see and return gob bytes.
func Gob[T any](name string, version uint32, v *T, mu sync.Locker) Participant {
	return value(name, version, v, mu,
		func(w io.Writer, v any) error { return gob.NewEncoder(w).Encode(v) },
		func(r io.Reader, v any) error { return gob.NewDecoder(r).Decode(v) })
}

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
