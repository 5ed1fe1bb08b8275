package state

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzRegistry reads sections "a" (version 1, or 0 through a migration)
// and "b" (version 2), with a MaxSize small enough to keep runs fast.
func fuzzRegistry(t testing.TB, policy UnknownSectionPolicy) *Registry {
	t.Helper()
	reg, err := NewRegistry(Options{MaxSize: 4 << 20, UnknownSections: policy})
	if err != nil {
		t.Fatal(err)
	}
	// One reads with Read, the other through WriteTo.
	readAll := func(r io.Reader) error { _, err := io.ReadAll(r); return err }
	copyAll := func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
	for _, p := range []Participant{
		{Name: "a", Version: 1, Capture: func(io.Writer) error { return nil }, Restore: readAll},
		{Name: "b", Version: 2, Capture: func(io.Writer) error { return nil }, Restore: copyAll},
	} {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.AddMigration("a", 0, 1, appendByte('m')); err != nil {
		t.Fatal(err)
	}
	return reg
}

// decodeErrors are the errors the decoder may return for bad input.
var decodeErrors = []error{ErrCorrupt, ErrBadMagic, ErrFormatVersion, ErrTooLarge, ErrUnknownSection, ErrDuplicateSection, ErrUnknownVersion}

// FuzzDecode feeds arbitrary bytes to the decoder. It must never panic,
// fail only with its sentinel errors, never claim to have read more than
// it was given, and agree with Verify. The seed corpus is in
// testdata/fuzz/FuzzDecode (see testdata/genseeds.go); more seeds that
// need the raw encoder are added here.
func FuzzDecode(f *testing.F) {
	hello := []byte("hello")
	for _, s := range [][]rawSection{
		nil,
		{{"a", 1, hello}, {"b", 2, nil}},
		{{"a", 0, hello}},
		{{"a", 1, hello}, {"a", 1, hello}},
		{{"zz", 3, hello}, {"b", 2, hello}},
		{{"b", 7, hello}},
	} {
		f.Add(rawSnapshot(f, s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, policy := range []UnknownSectionPolicy{FailUnknown, IgnoreUnknown} {
			info, err := fuzzRegistry(t, policy).ReadSnapshot(bytes.NewReader(data))
			if err != nil && !isAny(err, decodeErrors...) {
				t.Fatalf("ReadSnapshot = %v, not one of the decoder's errors", err)
			}
			if info.Bytes > int64(len(data)) {
				t.Fatalf("Info.Bytes = %d for %d bytes of input", info.Bytes, len(data))
			}
			vinfo, verr := fuzzRegistry(t, policy).Verify(bytes.NewReader(data))
			for _, target := range decodeErrors {
				if errors.Is(err, target) != errors.Is(verr, target) {
					t.Fatalf("ReadSnapshot = %v but Verify = %v", err, verr)
				}
			}
			if err == nil && vinfo.Bytes != info.Bytes {
				t.Fatalf("ReadSnapshot read %d bytes, Verify %d", info.Bytes, vinfo.Bytes)
			}
		}
	})
}

// fuzzPreCopyRegistry reads section "a" in two rounds and "b" in one; its
// callbacks read whatever they are given.
func fuzzPreCopyRegistry(t testing.TB) *Registry {
	t.Helper()
	reg, err := NewRegistry(Options{MaxSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	readAll := func(r io.Reader) error { _, err := io.ReadAll(r); return err }
	none := func(io.Writer) error { return nil }
	for _, p := range []Participant{
		{Name: "a", Version: 1, Capture: none, Restore: readAll, Reset: func() {}, PreCopy: &PreCopy{
			Want: func() bool { return true }, Capture: none, Delta: none, Stop: func() {},
			Restore: readAll, RestoreDelta: readAll}},
		{Name: "b", Version: 2, Capture: none, Restore: readAll},
	} {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// FuzzDecodePreCopy feeds arbitrary bytes to every round of a pre-copy
// handoff: as a first round (ReadPreCopy), and as a middle round
// (ReadPreCopy) and the last round after a valid first one. They must never
// panic, fail only with the decoder's sentinel errors or ErrPreCopy, and
// leave no earlier round behind after a failed later one.
func FuzzDecodePreCopy(f *testing.F) {
	src := fuzzPreCopyRegistry(f)
	var first, middle, second bytes.Buffer
	if _, err := src.WritePreCopy(&first, src.Accepts(), []string{"a"}); err != nil {
		f.Fatal(err)
	}
	if _, err := src.WritePreCopyDelta(&middle); err != nil {
		f.Fatal(err)
	}
	if _, err := src.WriteSnapshotFor(&second, src.Accepts()); err != nil {
		f.Fatal(err)
	}
	f.Add(first.Bytes())
	f.Add(middle.Bytes())
	f.Add(second.Bytes())
	f.Add(rawSnapshotFlags(f, flagDeltas, rawSection{"a", 1, []byte("x")}))
	f.Add(rawSnapshotFlags(f, flagPreCopy, rawSection{"b", 2, []byte("x")}))
	errs := append([]error{ErrPreCopy}, decodeErrors...)
	f.Fuzz(func(t *testing.T, data []byte) {
		reg := fuzzPreCopyRegistry(t)
		info, err := reg.ReadPreCopy(bytes.NewReader(data))
		if err != nil && !isAny(err, errs...) {
			t.Fatalf("ReadPreCopy = %v, not one of the decoder's errors", err)
		}
		if info.Bytes > int64(len(data)) {
			t.Fatalf("Info.Bytes = %d for %d bytes of input", info.Bytes, len(data))
		}
		reg.DiscardPreCopy()
		if _, err := reg.ReadPreCopy(bytes.NewReader(first.Bytes())); err != nil {
			t.Fatalf("ReadPreCopy of a valid first round: %v", err)
		}
		// As a middle round.
		if _, err := reg.ReadPreCopy(bytes.NewReader(data)); err != nil {
			if !isAny(err, errs...) {
				t.Fatalf("ReadPreCopy (middle round) = %v, not one of the decoder's errors", err)
			}
			if reg.preRestored != nil || reg.preUndo != nil {
				t.Fatal("a failed middle round left the first round behind")
			}
			if _, err := reg.ReadPreCopy(bytes.NewReader(first.Bytes())); err != nil {
				t.Fatalf("ReadPreCopy of a valid first round: %v", err)
			}
		}
		if _, err := reg.ReadSnapshot(bytes.NewReader(data)); err != nil {
			if !isAny(err, errs...) {
				t.Fatalf("ReadSnapshot (second round) = %v, not one of the decoder's errors", err)
			}
			if reg.preRestored != nil || reg.preUndo != nil {
				t.Fatal("a failed second round left its first round behind")
			}
		}
	})
}
