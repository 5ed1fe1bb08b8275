//go:build ignore

// genseeds writes the seed corpus of FuzzDecode: valid snapshots made with
// the public API, and mutations of them at the places PROTOCOL.md
// describes. Run from the state directory:
//
//	go run ./testdata/genseeds.go
//
// Seeds found by the fuzzer itself are kept in the same directory under
// their hash names.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/batonhq/baton/state"
)

func main() {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	write := func(name string, data []byte) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	empty, _ := snapshot(nil)
	two, hl := snapshot(map[string]section{"a": {1, []byte("hello")}, "b": {2, []byte(`{"n":1}`)}})
	old, _ := snapshot(map[string]section{"a": {0, []byte("old")}})
	unknown, _ := snapshot(map[string]section{"zz": {1, []byte("?")}, "b": {2, nil}})
	newer, _ := snapshot(map[string]section{"b": {9, nil}})
	large, _ := snapshot(map[string]section{"a": {1, bytes.Repeat([]byte("0123456789"), 300)}})

	write("valid-empty", empty)
	write("valid-two-sections", two)
	write("valid-migrated", old)
	write("valid-unknown-section", unknown)
	write("valid-newer-version", newer)
	write("valid-3000-bytes", large)

	chunk := hl + 1 + 1 + 1 + 4 + 4 // first chunk of section "a"
	write("bad-magic", put(two, 0, []byte("BATONSNQ")))
	write("format-version-2", put(two, 8, []byte{0, 2}))
	write("header-bit-flip", flip(two, hl-6))
	write("name-length-255", put(two, hl+1, []byte{255}))
	write("name-length-0", put(two, hl+1, []byte{0}))
	write("chunk-length-2p31", put(two, chunk, be32(1<<31)))
	write("chunk-length-max-plus-1", put(two, chunk, be32(1<<20+1)))
	write("chunk-length-too-long", put(two, chunk, be32(6)))
	write("chunk-crc-flip", flip(two, chunk+5))
	write("payload-flip", flip(two, chunk+9))
	write("section-crc-flip", flip(two, chunk+8+5+5))
	write("trailer-count", put(two, len(two)-16, be32(3)))
	write("trailer-crc-flip", flip(two, len(two)-1))
	write("truncated-header", two[:hl-3])
	write("truncated-chunk", two[:chunk+10])
	write("truncated-trailer", two[:len(two)-5])
	write("large-truncated", large[:len(large)/2])
	write("large-flip", flip(large, len(large)/2))
}

type section struct {
	version uint32
	data    []byte
}

// snapshot encodes sections, in name order, and returns it with the length
// of its header.
func snapshot(sections map[string]section) ([]byte, int) {
	reg, err := state.NewRegistry(state.Options{UserVersion: "seed"})
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"a", "b", "zz"} {
		s, ok := sections[name]
		if !ok {
			continue
		}
		err := reg.Register(state.Participant{
			Name:    name,
			Version: s.version,
			Capture: func(w io.Writer) error { _, err := w.Write(s.data); return err },
			Restore: func(io.Reader) error { return nil },
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := reg.WriteSnapshot(&buf); err != nil {
		log.Fatal(err)
	}
	b := reg.Build()
	hl := 12 + 6 + len(b.Module) + len(b.Version) + len(b.Revision) + len(b.Time) + len(b.GoVersion) + len(b.User) + 1 + 4
	return buf.Bytes(), hl
}

func put(b []byte, off int, p []byte) []byte {
	out := bytes.Clone(b)
	copy(out[off:], p)
	return out
}

func flip(b []byte, off int) []byte {
	return put(b, off, []byte{b[off] ^ 0x04})
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
