package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// Offsets into a rawSnapshot, from PROTOCOL.md.
func headerLen(b Build) int {
	return 12 + 6 + len(b.Module) + len(b.Version) + len(b.Revision) + len(b.Time) + len(b.GoVersion) + len(b.User) + 1 + 4
}

func sectionHeaderLen(name string) int { return 1 + 1 + len(name) + 4 + 4 }

// patch returns a copy of snap with b written at off.
func patch(snap []byte, off int, b ...byte) []byte {
	out := bytes.Clone(snap)
	copy(out[off:], b)
	return out
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// recorder is a participant that keeps what Restore saw, including the
// error its reader returned.
type recorder struct {
	name    string
	version uint32
	got     []byte
	readErr error
	calls   int
	stopAt  int   // if > 0, Restore stops reading after this many bytes
	fail    error // returned by Restore
	resets  int   // Reset calls: the undo of a failed snapshot's restores
}

func (r *recorder) participant() Participant {
	return Participant{
		Name:    r.name,
		Version: r.version,
		Capture: func(io.Writer) error { return nil },
		Restore: func(rd io.Reader) error {
			r.calls++
			if r.stopAt > 0 {
				rd = io.LimitReader(rd, int64(r.stopAt))
			}
			r.got, r.readErr = io.ReadAll(rd)
			if r.readErr != nil {
				return r.readErr
			}
			return r.fail
		},
		// A Reset keeps the undo from calling Restore a second time,
		// which would overwrite what the decoder fed the first one.
		Reset: func() { r.resets++ },
	}
}

func readWith(t *testing.T, opts Options, snap []byte, parts ...*recorder) (Info, error) {
	t.Helper()
	reg := newRegistry(t, opts)
	for _, p := range parts {
		if err := reg.Register(p.participant()); err != nil {
			t.Fatal(err)
		}
	}
	return reg.ReadSnapshot(bytes.NewReader(snap))
}

func TestDecodeBadInput(t *testing.T) {
	build := currentBuild("raw")
	hl := headerLen(build)
	valid := rawSnapshot(t, rawSection{"a", 0, []byte("hello")})
	chunkAt := hl + sectionHeaderLen("a") // first chunk header of section a

	// flagged is valid with its header flags set to f, checksummed.
	flagged := func(f uint16) []byte {
		out := patch(valid, 10, byte(f>>8), byte(f))
		copy(out[hl-4:], be32(crc32.Checksum(out[:hl-4], castagnoli)))
		return out
	}
	withFlags := flagged(1 << 3) // bit 3: not defined (bits 0 to 2 are alternates, pre-copy, deltas)
	// A delta section where the header does not allow one.
	deltaTag := patch(valid, hl, tagDelta)

	// A section header with a name length byte of n, checksummed.
	sectionWithNameLen := func(n byte) []byte {
		out := bytes.Clone(valid[:hl])
		out = append(out, tagSection, n)
		out = append(out, bytes.Repeat([]byte("a"), int(n))...)
		return append(out, make([]byte, 8)...)
	}

	tests := []struct {
		name    string
		input   []byte
		opts    Options
		wantErr error
		mention string
	}{
		{"empty", nil, Options{}, ErrCorrupt, "truncated"},
		{"short garbage", []byte("hello"), Options{}, ErrBadMagic, ""},
		{"short magic prefix", []byte("BATON"), Options{}, ErrCorrupt, "truncated"},
		{"other file", []byte("\x89PNG\r\n\x1a\n and more bytes"), Options{}, ErrBadMagic, "PNG"},
		{"format version", patch(valid, 8, 0, 2), Options{}, ErrFormatVersion, "format 2"},
		{"flags", withFlags, Options{}, ErrFormatVersion, "flags"},
		{"flags combined", flagged(flagAlternates | flagDeltas), Options{}, ErrCorrupt, "cannot be combined"},
		{"pre-copy, deltas and alternates", flagged(flagPreCopy | flagDeltas | flagAlternates), Options{}, ErrCorrupt, "cannot be combined"},
		{"pre-copy and alternates", flagged(flagPreCopy | flagAlternates), Options{}, ErrCorrupt, "cannot be combined"},
		{"middle round read whole", flagged(flagPreCopy | flagDeltas), Options{}, ErrPreCopy, "middle round"},
		{"first round read whole", flagged(flagPreCopy), Options{}, ErrPreCopy, "first or a middle round"},
		{"delta without the flag", deltaTag, Options{}, ErrCorrupt, "record tag"},
		{"header checksum", patch(valid, hl-1, valid[hl-1]^1), Options{}, ErrCorrupt, "header checksum"},
		{"unknown record tag", patch(valid, hl, 'X'), Options{}, ErrCorrupt, "record tag"},
		{"chunk of 2^31 bytes", patch(valid, chunkAt, 0x80, 0, 0, 0), Options{}, ErrCorrupt, "2147483648"},
		{"chunk of 2^32-1 bytes", patch(valid, chunkAt, 0xff, 0xff, 0xff, 0xff), Options{}, ErrCorrupt, "chunk of"},
		{"chunk one past the limit", patch(valid, chunkAt, be32(maxChunk+1)...), Options{}, ErrCorrupt, "chunk of"},
		{"chunk longer than data", patch(valid, chunkAt, be32(1000)...), Options{}, ErrCorrupt, ""},
		{"chunk checksum", patch(valid, chunkAt+4, valid[chunkAt+4]^0x10), Options{}, ErrCorrupt, "checksum"},
		{"payload byte", patch(valid, chunkAt+8, 'j'), Options{}, ErrCorrupt, "checksum"},
		{"section checksum", patch(valid, chunkAt+8+5+4, valid[chunkAt+8+5+4]^1), Options{}, ErrCorrupt, "section \"a\": checksum"},
		{"section length", patch(valid, chunkAt+8+5+8+7, 6), Options{}, ErrCorrupt, "footer"},
		{"name of 255 bytes", sectionWithNameLen(255), Options{}, ErrCorrupt, "name of 255 bytes"},
		{"name of 65 bytes", sectionWithNameLen(65), Options{}, ErrCorrupt, "name of 65 bytes"},
		{"empty name", sectionWithNameLen(0), Options{}, ErrCorrupt, "name of 0 bytes"},
		{"name with bad characters", rawSnapshot(t, rawSection{"A/B", 0, nil}), Options{}, ErrCorrupt, "invalid section name"},
		{"duplicate section", rawSnapshot(t, rawSection{"a", 0, []byte("1")}, rawSection{"a", 0, []byte("2")}), Options{}, ErrDuplicateSection, `"a"`},
		{"unknown section", rawSnapshot(t, rawSection{"zz", 0, nil}), Options{}, ErrUnknownSection, `"zz"`},
		{"unknown version", rawSnapshot(t, rawSection{"a", 4, nil}), Options{}, ErrUnknownVersion, "version 4"},
		{"trailer count", patch(valid, len(valid)-16, 0, 0, 0, 2), Options{}, ErrCorrupt, ""},
		{"trailer checksum", patch(valid, len(valid)-1, valid[len(valid)-1]^1), Options{}, ErrCorrupt, "snapshot checksum"},
		{"trailer missing", valid[:len(valid)-trailerLen], Options{}, ErrCorrupt, "truncated"},
		{"larger than MaxSize", valid, Options{MaxSize: int64(len(valid) - 1)}, ErrTooLarge, "MaxSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readWith(t, tt.opts, tt.input, &recorder{name: "a"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadSnapshot = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("ReadSnapshot = %v, want it to mention %q", err, tt.mention)
			}
		})
	}

	t.Run("exactly MaxSize", func(t *testing.T) {
		if _, err := readWith(t, Options{MaxSize: int64(len(valid))}, valid, &recorder{name: "a"}); err != nil {
			t.Errorf("ReadSnapshot = %v", err)
		}
	})
}

// TestDecodeEveryPrefixAndBitFlip damages a small snapshot in every way a
// single truncation or flipped bit can: the decoder must fail cleanly with
// one of its errors, and never restore damaged bytes.
func TestDecodeEveryPrefixAndBitFlip(t *testing.T) {
	valid := rawSnapshot(t, rawSection{"a", 0, []byte("hello")}, rawSection{"b", 1, nil})
	check := func(t *testing.T, input []byte, what string) {
		t.Helper()
		a, b := &recorder{name: "a"}, &recorder{name: "b", version: 1}
		_, err := readWith(t, Options{}, input, a, b)
		if !isAny(err, ErrCorrupt, ErrBadMagic, ErrFormatVersion) {
			t.Fatalf("%s: ReadSnapshot = %v", what, err)
		}
		if len(a.got) > 0 && string(a.got) != "hello" {
			t.Fatalf("%s: Restore saw %q", what, a.got)
		}
		if a.calls > 0 && a.readErr == nil && string(a.got) != "hello" {
			t.Fatalf("%s: Restore saw the end of a damaged section", what)
		}
	}
	for n := range len(valid) {
		check(t, valid[:n], "prefix")
	}
	for i := range len(valid) {
		for bit := range 8 {
			check(t, patch(valid, i, valid[i]^1<<bit), "bit flip")
		}
	}
}

func TestRestoreSeesErrorsNotEOF(t *testing.T) {
	data := pattern(3*maxChunk+10, 5)
	valid := rawSnapshot(t, rawSection{"a", 0, data})
	hl := headerLen(currentBuild("raw"))
	first := hl + sectionHeaderLen("a") // first chunk header
	second := first + chunkHeaderLen + maxChunk
	third := second + chunkHeaderLen + maxChunk

	tests := []struct {
		name     string
		input    []byte
		wantSeen int // verified bytes Restore may have seen, at most
		inOrder  bool
	}{
		{"truncated inside a chunk", valid[:second+100], maxChunk, true},
		{"truncated at a chunk boundary", valid[:second], maxChunk, true},
		{"second chunk damaged", patch(valid, second+chunkHeaderLen+7, ^valid[second+chunkHeaderLen+7]), maxChunk, true},
		// Each chunk is intact, so Restore sees them; the section
		// checksum and length, checked before io.EOF, catch the gap.
		{"chunk dropped", append(bytes.Clone(valid[:second]), valid[third:]...), 2*maxChunk + 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{name: "a"}
			_, err := readWith(t, Options{}, tt.input, r)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadSnapshot = %v, want ErrCorrupt", err)
			}
			if !errors.Is(r.readErr, ErrCorrupt) {
				t.Errorf("Restore's reader returned %v, want ErrCorrupt", r.readErr)
			}
			if len(r.got) > tt.wantSeen || tt.inOrder && !bytes.Equal(r.got, data[:len(r.got)]) {
				t.Errorf("Restore saw %d bytes, want an intact prefix of at most %d", len(r.got), tt.wantSeen)
			}
		})
	}
}

func TestRestoreOutcomes(t *testing.T) {
	data := pattern(2*maxChunk+3, 9)
	valid := rawSnapshot(t, rawSection{"a", 0, data}, rawSection{"b", 0, []byte("b")})
	boom := errors.New("boom")

	t.Run("restore fails", func(t *testing.T) {
		a, b := &recorder{name: "a", fail: boom}, &recorder{name: "b"}
		_, err := readWith(t, Options{}, valid, a, b)
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), `restore "a"`) {
			t.Errorf("ReadSnapshot = %v, want boom naming a", err)
		}
		if b.calls != 0 {
			t.Errorf("b restored after a failed")
		}
	})
	t.Run("restore stops early", func(t *testing.T) {
		a, b := &recorder{name: "a", stopAt: 10}, &recorder{name: "b"}
		if _, err := readWith(t, Options{}, valid, a, b); err != nil {
			t.Fatalf("ReadSnapshot = %v", err)
		}
		if string(b.got) != "b" {
			t.Errorf("b restored %q", b.got)
		}
	})
	t.Run("restore stops early, rest damaged", func(t *testing.T) {
		end := len(valid) - trailerLen - len("b") - 30 // inside a's last chunk or footer
		damaged := patch(valid, end, ^valid[end])
		a := &recorder{name: "a", stopAt: 10}
		if _, err := readWith(t, Options{}, damaged, a, &recorder{name: "b"}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadSnapshot = %v, want ErrCorrupt found while draining", err)
		}
	})
	t.Run("duplicate restores once", func(t *testing.T) {
		a := &recorder{name: "a"}
		dup := rawSnapshot(t, rawSection{"a", 0, []byte("1")}, rawSection{"a", 0, []byte("2")})
		if _, err := readWith(t, Options{}, dup, a); !errors.Is(err, ErrDuplicateSection) || a.calls != 1 {
			t.Errorf("ReadSnapshot = %v after %d restores, want ErrDuplicateSection after 1", err, a.calls)
		}
	})
	t.Run("read error is not corruption", func(t *testing.T) {
		disk := errors.New("disk on fire")
		r := io.MultiReader(bytes.NewReader(valid[:100]), iotest.ErrReader(disk))
		reg := newRegistry(t, Options{}, &blob{name: "a"}, &blob{name: "b"})
		_, err := reg.ReadSnapshot(r)
		if !errors.Is(err, disk) || errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadSnapshot = %v, want the read error and not ErrCorrupt", err)
		}
	})
	t.Run("one byte at a time", func(t *testing.T) {
		a, b := &recorder{name: "a"}, &recorder{name: "b"}
		reg := newRegistry(t, Options{})
		reg.Register(a.participant())
		reg.Register(b.participant())
		if _, err := reg.ReadSnapshot(iotest.OneByteReader(bytes.NewReader(valid))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.got, data) {
			t.Errorf("restored %d bytes, want %d", len(a.got), len(data))
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		reg := newRegistry(t, Options{}, &blob{name: "a"}, &blob{name: "b"})
		if _, err := reg.readSnapshot(ctx, bytes.NewReader(valid), readRestore); !errors.Is(err, context.Canceled) {
			t.Errorf("readSnapshot = %v, want context.Canceled", err)
		}
	})
}

// TestDecodeAllocatesBoundedly feeds lengths that promise far more data
// than there is: the decoder must not allocate for the promise.
func TestDecodeAllocatesBoundedly(t *testing.T) {
	valid := rawSnapshot(t, rawSection{"a", 0, []byte("hello")})
	chunkAt := headerLen(currentBuild("raw")) + sectionHeaderLen("a")
	inputs := map[string][]byte{
		"chunk of 2^31":      patch(valid, chunkAt, 0x80, 0, 0, 0),
		"chunk of 1 MiB":     patch(valid, chunkAt, be32(maxChunk)...),
		"name of 255":        append(bytes.Clone(valid[:chunkAt-sectionHeaderLen("a")]), tagSection, 255),
		"truncated in magic": []byte("BATO"),
	}
	for name, input := range inputs {
		t.Run(name, func(t *testing.T) {
			reg := newRegistry(t, Options{}, &blob{name: "a"})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := reg.ReadSnapshot(bytes.NewReader(input))
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("ReadSnapshot succeeded")
			}
			// A chunk buffer is at most 1 MiB; allow for test overhead.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*maxChunk {
				t.Errorf("allocated %d bytes for a %d-byte input", alloc, len(input))
			}
		})
	}
}
