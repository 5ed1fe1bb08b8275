package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestNewRegistryOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr error
	}{
		{"zero value", Options{}, nil},
		{"all set", Options{MaxSize: 1 << 20, UnknownSections: IgnoreUnknown, UserVersion: "v1"}, nil},
		{"negative max", Options{MaxSize: -1}, ErrInvalidOptions},
		{"bad policy", Options{UnknownSections: 7}, ErrInvalidOptions},
		{"long user version", Options{UserVersion: strings.Repeat("x", MaxUserVersion+1)}, ErrInvalidOptions},
		{"longest user version", Options{UserVersion: strings.Repeat("x", MaxUserVersion)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := NewRegistry(tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewRegistry = %v, want %v", err, tt.wantErr)
			}
			if err == nil && tt.opts.MaxSize == 0 && reg.opts.MaxSize != DefaultMaxSize {
				t.Errorf("MaxSize = %d, want DefaultMaxSize", reg.opts.MaxSize)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	ok := (&blob{name: "ok"}).participant()
	with := func(name string) Participant { p := ok; p.Name = name; return p }
	noCapture, noRestore := ok, ok
	noCapture.Capture = nil
	noRestore.Restore = nil
	tests := []struct {
		name    string
		p       Participant
		wantErr error
	}{
		{"simple", with("workers"), nil},
		{"all characters", with("a-z_0.9"), nil},
		{"64 bytes", with(strings.Repeat("a", 64)), nil},
		{"empty name", with(""), ErrInvalidParticipant},
		{"65 bytes", with(strings.Repeat("a", 65)), ErrInvalidParticipant},
		{"upper case", with("Workers"), ErrInvalidParticipant},
		{"slash", with("a/b"), ErrInvalidParticipant},
		{"space", with("a b"), ErrInvalidParticipant},
		{"no capture", noCapture, ErrInvalidParticipant},
		{"no restore", noRestore, ErrInvalidParticipant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newRegistry(t, Options{})
			if err := reg.Register(tt.p); !errors.Is(err, tt.wantErr) {
				t.Errorf("Register = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("duplicate", func(t *testing.T) {
		reg := newRegistry(t, Options{}, &blob{name: "a"})
		if err := reg.Register(with("a")); !errors.Is(err, ErrDuplicateParticipant) {
			t.Errorf("Register = %v, want ErrDuplicateParticipant", err)
		}
	})
	t.Run("while frozen", func(t *testing.T) {
		reg := newRegistry(t, Options{}, &blob{name: "a"})
		if err := reg.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := reg.Register(with("b")); !errors.Is(err, ErrFrozen) {
			t.Errorf("Register = %v, want ErrFrozen", err)
		}
		reg.Thaw()
		if err := reg.Register(with("b")); err != nil {
			t.Errorf("Register after Thaw = %v", err)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		write int // largest Write; 0 means one Write
	}{
		{"empty", 0, 0},
		{"one byte", 1, 0},
		{"small writes", 10_000, 7},
		{"exactly one chunk", maxChunk, 0},
		{"one chunk plus one", maxChunk + 1, 0},
		{"large single write", 3*maxChunk + 5, 0},
		{"writes across chunks", 2*maxChunk + 3, maxChunk/3 + 1},
		{"buffered then large", 2*maxChunk + 100, maxChunk + 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &blob{name: "data", version: 3, data: pattern(tt.size, 1), writeMax: tt.write}
			small := &blob{name: "small", version: 1, data: []byte("hello")}
			snap := snapshotOf(t, newRegistry(t, Options{UserVersion: "release-7"}, small, src))

			dst, dsmall := &blob{name: "data", version: 3}, &blob{name: "small", version: 1}
			info, err := newRegistry(t, Options{}, dst, dsmall).ReadSnapshot(bytes.NewReader(snap))
			if err != nil {
				t.Fatalf("ReadSnapshot: %v", err)
			}
			if !bytes.Equal(dst.got, src.data) || string(dsmall.got) != "hello" {
				t.Errorf("restored %d and %q bytes, want %d and %q", len(dst.got), dsmall.got, len(src.data), "hello")
			}
			want := Info{
				Format:   FormatVersion,
				Producer: currentBuild("release-7"),
				Sections: []Section{{Name: "small", Version: 1, Bytes: 5}, {Name: "data", Version: 3, Bytes: int64(tt.size)}},
				Bytes:    int64(len(snap)),
			}
			if !reflect.DeepEqual(info, want) {
				t.Errorf("Info = %+v\nwant   %+v", info, want)
			}
		})
	}
}

func TestReadSnapshotReadsNoFurther(t *testing.T) {
	snap := snapshotOf(t, newRegistry(t, Options{}, &blob{name: "a", data: pattern(100, 1)}))
	r := bytes.NewReader(append(slices.Clip(snap), "next message"...))
	if _, err := newRegistry(t, Options{}, &blob{name: "a"}).ReadSnapshot(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "next message" {
		t.Errorf("left %q after the snapshot, want %q", rest, "next message")
	}
}

func TestMissingAndSkipped(t *testing.T) {
	snap := snapshotOf(t, newRegistry(t, Options{},
		&blob{name: "kept", data: []byte("k")},
		&blob{name: "dropped", data: []byte("d")}))

	t.Run("fail unknown", func(t *testing.T) {
		_, err := newRegistry(t, Options{}, &blob{name: "kept"}).ReadSnapshot(bytes.NewReader(snap))
		if !errors.Is(err, ErrUnknownSection) || !strings.Contains(err.Error(), `"dropped"`) {
			t.Errorf("ReadSnapshot = %v, want ErrUnknownSection naming the section", err)
		}
	})
	t.Run("ignore unknown", func(t *testing.T) {
		kept, added := &blob{name: "kept"}, &blob{name: "added"}
		info, err := newRegistry(t, Options{UnknownSections: IgnoreUnknown}, kept, added).ReadSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatal(err)
		}
		if string(kept.got) != "k" || added.restored != 0 {
			t.Errorf("kept restored %q, added restored %d times", kept.got, added.restored)
		}
		if !slices.Equal(info.Skipped, []string{"dropped"}) || !slices.Equal(info.Missing, []string{"added"}) {
			t.Errorf("Skipped %v, Missing %v; want [dropped], [added]", info.Skipped, info.Missing)
		}
	})
}

func TestMigrationOnRead(t *testing.T) {
	old := newRegistry(t, Options{}, &blob{name: "s", version: 1, data: pattern(2*maxChunk+9, 3)})
	snap := snapshotOf(t, old)

	cur := &blob{name: "s", version: 3}
	reg := newRegistry(t, Options{}, cur)
	if err := reg.AddMigration("s", 2, 3, appendByte('3')); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.ReadSnapshot(bytes.NewReader(snap)); !errors.Is(err, ErrUnknownVersion) || cur.restored != 0 {
		t.Fatalf("without 1 -> 2: %v (restored %d), want ErrUnknownVersion", err, cur.restored)
	}
	if err := reg.AddMigration("s", 1, 2, appendByte('2')); err != nil {
		t.Fatal(err)
	}
	info, err := reg.ReadSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	want := append(pattern(2*maxChunk+9, 3), '2', '3')
	if !bytes.Equal(cur.got, want) {
		t.Errorf("restored %d bytes, want %d ending in 23", len(cur.got), len(want))
	}
	if info.Sections[0].Version != 1 {
		t.Errorf("Info reports version %d, want the snapshot's 1", info.Sections[0].Version)
	}

	t.Run("migration fails", func(t *testing.T) {
		boom := errors.New("boom")
		dst := &blob{name: "s", version: 2}
		reg := newRegistry(t, Options{}, dst)
		reg.AddMigration("s", 1, 2, func([]byte) ([]byte, error) { return nil, boom })
		if _, err := reg.ReadSnapshot(bytes.NewReader(snap)); !errors.Is(err, boom) || dst.restored != 0 {
			t.Errorf("ReadSnapshot = %v (restored %d), want the migration's error", err, dst.restored)
		}
	})
	t.Run("bad registration", func(t *testing.T) {
		reg := newRegistry(t, Options{})
		if err := reg.AddMigration("Bad Name", 1, 2, appendByte('x')); !errors.Is(err, ErrBadMigration) {
			t.Errorf("AddMigration(bad name) = %v", err)
		}
		if err := reg.AddMigration("s", 2, 2, appendByte('x')); !errors.Is(err, ErrBadMigration) {
			t.Errorf("AddMigration(2 -> 2) = %v", err)
		}
	})
}

func TestAcceptsCheck(t *testing.T) {
	newer := newRegistry(t, Options{}, &blob{name: "workers", version: 3}, &blob{name: "cache", version: 1})
	if err := newer.AddMigration("workers", 2, 3, appendByte('x')); err != nil {
		t.Fatal(err)
	}
	accepts := newer.Accepts()
	wantAccepts := Accepts{Formats: []uint16{FormatVersion}, Sections: map[string][]uint32{"workers": {2, 3}, "cache": {1}}}
	if !reflect.DeepEqual(accepts, wantAccepts) {
		t.Fatalf("Accepts = %+v, want %+v", accepts, wantAccepts)
	}
	// It crosses the process boundary as JSON.
	b, err := json.Marshal(accepts)
	if err != nil {
		t.Fatal(err)
	}
	var decoded Accepts
	if err := json.Unmarshal(b, &decoded); err != nil || !reflect.DeepEqual(decoded, accepts) {
		t.Fatalf("JSON round trip = %+v, %v", decoded, err)
	}
	ignoring := accepts
	ignoring.IgnoreUnknown = true

	tests := []struct {
		name     string
		accepts  Accepts
		manifest Manifest
		wantErrs []error
		mention  []string
	}{
		{"same", accepts, Manifest{Format: 1, Sections: []Section{{Name: "workers", Version: 3}, {Name: "cache", Version: 1}}}, nil, nil},
		{"older, migrated", accepts, Manifest{Format: 1, Sections: []Section{{Name: "workers", Version: 2}}}, nil, nil},
		{"too old", accepts, Manifest{Format: 1, Sections: []Section{{Name: "workers", Version: 1}}}, []error{ErrUnknownVersion}, []string{`"workers"`, "version 1", "[2 3]"}},
		{"newer", accepts, Manifest{Format: 1, Sections: []Section{{Name: "cache", Version: 2}}}, []error{ErrUnknownVersion}, []string{`"cache"`, "version 2"}},
		{"unknown", accepts, Manifest{Format: 1, Sections: []Section{{Name: "sessions", Version: 1}}}, []error{ErrUnknownSection}, []string{`"sessions"`}},
		{"unknown ignored", ignoring, Manifest{Format: 1, Sections: []Section{{Name: "sessions", Version: 1}}}, nil, nil},
		{"format", accepts, Manifest{Format: 2}, []error{ErrFormatVersion}, []string{"format 2"}},
		{"newer, migrated down", accepts, Manifest{Format: 1, Sections: []Section{{Name: "cache", Version: 3}},
			Downgrades: map[string][]uint32{"cache": {2, 1}}}, nil, nil},
		{"newer, not down far enough", accepts, Manifest{Format: 1, Sections: []Section{{Name: "workers", Version: 6}},
			Downgrades: map[string][]uint32{"workers": {5, 4}}}, []error{ErrUnknownVersion}, []string{`"workers"`, "version 6", "[5 4]"}},
		{"several", accepts, Manifest{Format: 1, Sections: []Section{{Name: "sessions"}, {Name: "cache", Version: 9}}}, []error{ErrUnknownSection, ErrUnknownVersion}, []string{`"sessions"`, `"cache"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.accepts.Check(tt.manifest)
			if (err == nil) != (len(tt.wantErrs) == 0) {
				t.Fatalf("Check = %v, want %v", err, tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("Check = %v, want it to wrap %v", err, want)
				}
			}
			for _, s := range tt.mention {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Check = %v, want it to mention %s", err, s)
				}
			}
		})
	}

	t.Run("registry manifest", func(t *testing.T) {
		older := newRegistry(t, Options{}, &blob{name: "workers", version: 2}, &blob{name: "sessions", version: 1})
		want := Manifest{Format: FormatVersion, Sections: []Section{{Name: "workers", Version: 2}, {Name: "sessions", Version: 1}}}
		if got := older.Manifest(); !reflect.DeepEqual(got, want) {
			t.Errorf("Manifest = %+v, want %+v", got, want)
		}
		if err := older.CheckReadable(accepts); !errors.Is(err, ErrUnknownSection) {
			t.Errorf("CheckReadable = %v, want ErrUnknownSection for sessions", err)
		}
	})
}

// freezer records Freeze and Thaw calls into a shared log.
func freezer(name string, log *[]string, fail error) Participant {
	p := (&blob{name: name}).participant()
	p.Freeze = func(ctx context.Context) error {
		if fail != nil {
			return fail
		}
		*log = append(*log, "freeze "+name)
		return nil
	}
	p.Thaw = func() { *log = append(*log, "thaw "+name) }
	return p
}

func TestFreezeThaw(t *testing.T) {
	boom := errors.New("boom")
	t.Run("freeze and thaw in order", func(t *testing.T) {
		var log []string
		reg := newRegistry(t, Options{})
		for _, n := range []string{"a", "b", "c"} {
			reg.Register(freezer(n, &log, nil))
		}
		noHooks := (&blob{name: "d"}).participant()
		reg.Register(noHooks)
		if err := reg.Freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := reg.Freeze(context.Background()); !errors.Is(err, ErrFrozen) {
			t.Errorf("second Freeze = %v, want ErrFrozen", err)
		}
		reg.Thaw()
		reg.Thaw() // nothing frozen: no calls
		want := []string{"freeze a", "freeze b", "freeze c", "thaw c", "thaw b", "thaw a"}
		if !slices.Equal(log, want) {
			t.Errorf("calls %v, want %v", log, want)
		}
	})
	t.Run("failure thaws the frozen", func(t *testing.T) {
		var log []string
		reg := newRegistry(t, Options{})
		reg.Register(freezer("a", &log, nil))
		reg.Register(freezer("b", &log, nil))
		reg.Register(freezer("c", &log, boom))
		reg.Register(freezer("d", &log, nil))
		err := reg.Freeze(context.Background())
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), `"c"`) {
			t.Errorf("Freeze = %v, want boom naming c", err)
		}
		want := []string{"freeze a", "freeze b", "thaw b", "thaw a"}
		if !slices.Equal(log, want) {
			t.Errorf("calls %v, want %v", log, want)
		}
		// The registry is usable again.
		log = nil
		reg.Thaw()
		if len(log) != 0 {
			t.Errorf("Thaw after failed Freeze called %v", log)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		var log []string
		reg := newRegistry(t, Options{})
		reg.Register(freezer("a", &log, nil))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := reg.Freeze(ctx); !errors.Is(err, context.Canceled) || len(log) != 0 {
			t.Errorf("Freeze = %v with calls %v, want context.Canceled and none", err, log)
		}
	})
}

func TestWriteSnapshotErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("capture fails", func(t *testing.T) {
		reg := newRegistry(t, Options{}, &blob{name: "a"})
		reg.Register(Participant{
			Name:    "bad",
			Capture: func(w io.Writer) error { w.Write([]byte("partial")); return boom },
			Restore: func(io.Reader) error { return nil },
		})
		_, err := reg.WriteSnapshot(io.Discard)
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), `"bad"`) {
			t.Errorf("WriteSnapshot = %v, want boom naming the section", err)
		}
	})
	t.Run("writer fails", func(t *testing.T) {
		reg := newRegistry(t, Options{}, &blob{name: "a", data: pattern(2*maxChunk, 1)})
		_, err := reg.WriteSnapshot(&failWriter{after: maxChunk, err: boom})
		if !errors.Is(err, boom) {
			t.Errorf("WriteSnapshot = %v, want the writer's error", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		reg := newRegistry(t, Options{MaxSize: 3 * maxChunk}, &blob{name: "a", data: pattern(3*maxChunk, 1)})
		n, err := reg.WriteSnapshot(io.Discard)
		if !errors.Is(err, ErrTooLarge) || n > 3*maxChunk {
			t.Errorf("WriteSnapshot = %d, %v; want at most MaxSize bytes and ErrTooLarge", n, err)
		}
	})
	t.Run("largest allowed", func(t *testing.T) {
		reg := newRegistry(t, Options{}, &blob{name: "a", data: pattern(1000, 1)})
		size := int64(len(snapshotOf(t, reg)))
		reg.opts.MaxSize = size
		if _, err := reg.WriteSnapshot(io.Discard); err != nil {
			t.Errorf("WriteSnapshot at exactly MaxSize: %v", err)
		}
		reg.opts.MaxSize = size - 1
		if _, err := reg.WriteSnapshot(io.Discard); !errors.Is(err, ErrTooLarge) {
			t.Errorf("WriteSnapshot one byte over MaxSize: %v", err)
		}
	})
}

// failWriter fails once more than after bytes have been written.
type failWriter struct {
	after int
	n     int
	err   error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.after {
		return 0, w.err
	}
	w.n += len(p)
	return len(p), nil
}

func TestBuildString(t *testing.T) {
	b := Build{Module: "example.com/app", Version: "v1.2.3", Revision: "0123456789abcdef", Modified: true, GoVersion: "go1.26", User: "r7"}
	want := `example.com/app@v1.2.3 rev=0123456789ab+dirty go=go1.26 user="r7"`
	if got := b.String(); got != want {
		t.Errorf("String = %s, want %s", got, want)
	}
	reg := newRegistry(t, Options{UserVersion: "r8"})
	if got := reg.Build(); got.User != "r8" || got.Module != "github.com/batonhq/baton" || got.GoVersion == "" {
		t.Errorf("Build = %+v, want this module, its toolchain and user version r8", got)
	}
	if got := fmt.Sprint(reg.Build()); !strings.Contains(got, `user="r8"`) {
		t.Errorf("Build.String = %s", got)
	}
}

// TestKeptReaderAndWriter checks that a participant that keeps its reader
// or writer past its call gets an error, never recycled buffers.
func TestKeptReaderAndWriter(t *testing.T) {
	var keptW io.Writer
	reg := newRegistry(t, Options{})
	reg.Register(Participant{
		Name:    "a",
		Capture: func(w io.Writer) error { keptW = w; _, err := w.Write([]byte("abc")); return err },
		Restore: func(io.Reader) error { return nil },
	})
	snap := snapshotOf(t, reg)
	if _, err := keptW.Write([]byte("late")); !errors.Is(err, errReleased) {
		t.Errorf("late Write = %v, want errReleased", err)
	}

	var keptR io.Reader
	reg2 := newRegistry(t, Options{})
	reg2.Register(Participant{
		Name:    "a",
		Capture: func(io.Writer) error { return nil },
		Restore: func(r io.Reader) error {
			keptR = r
			if _, err := r.Read(make([]byte, 1)); err != nil {
				return err
			}
			return errors.New("stop here") // "bc" stays buffered
		},
	})
	if _, err := reg2.ReadSnapshot(bytes.NewReader(snap)); err == nil {
		t.Fatal("ReadSnapshot succeeded")
	}
	if n, err := keptR.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Errorf("late Read = %d, %v; want nothing and an error", n, err)
	}
}
