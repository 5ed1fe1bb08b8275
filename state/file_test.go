package state

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.snap")
	src := &blob{name: "a", data: pattern(2*maxChunk+1, 4)}
	n, err := WriteFile(path, newRegistry(t, Options{}, src))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != n {
		t.Errorf("file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), n)
	}
	dst := &blob{name: "a"}
	info, err := ReadFile(path, newRegistry(t, Options{}, dst))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.got, src.data) || info.Bytes != n {
		t.Errorf("restored %d bytes of %d, Info.Bytes %d", len(dst.got), len(src.data), info.Bytes)
	}
	if dst.restored != 1 {
		t.Errorf("Restore called %d times, want 1", dst.restored)
	}
	assertDir(t, dir, "state.snap")
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.snap")
	if _, err := WriteFile(path, newRegistry(t, Options{}, &blob{name: "a", data: []byte("first")})); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	boom := errors.New("boom")
	bad := newRegistry(t, Options{}, &blob{name: "a", data: pattern(maxChunk+5, 1)})
	bad.Register(Participant{Name: "b", Capture: func(io.Writer) error { return boom }, Restore: func(io.Reader) error { return nil }})
	if _, err := WriteFile(path, bad); !errors.Is(err, boom) {
		t.Fatalf("WriteFile = %v, want boom", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("a failed WriteFile changed the file")
	}
	assertDir(t, dir, "state.snap") // no temporary file left

	if _, err := WriteFile(path, newRegistry(t, Options{}, &blob{name: "a", data: []byte("second")})); err != nil {
		t.Fatal(err)
	}
	dst := &blob{name: "a"}
	if _, err := ReadFile(path, newRegistry(t, Options{}, dst)); err != nil || string(dst.got) != "second" {
		t.Errorf("ReadFile = %q, %v; want the second snapshot", dst.got, err)
	}
	assertDir(t, dir, "state.snap")

	if _, err := WriteFile(filepath.Join(dir, "missing", "state.snap"), bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteFile into a missing directory = %v", err)
	}
}

func TestReadFileMissing(t *testing.T) {
	dst := &blob{name: "a"}
	_, err := ReadFile(filepath.Join(t.TempDir(), "none"), newRegistry(t, Options{}, dst))
	if !errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrMovedAside) || dst.restored != 0 {
		t.Errorf("ReadFile = %v, want ErrNoSnapshot only", err)
	}
}

func TestReadFileMovesAside(t *testing.T) {
	good := snapshotOf(t, newRegistry(t, Options{},
		&blob{name: "a", data: []byte("first")},
		&blob{name: "b", data: pattern(maxChunk+10, 2)}))
	boom := errors.New("boom")
	tests := []struct {
		name    string
		content []byte
		bFails  error
		wantErr error
		wantA   int // Restore calls of a
	}{
		{"empty", nil, nil, ErrCorrupt, 0},
		{"not a snapshot", []byte("{\"json\": true}\n"), nil, ErrBadMagic, 0},
		{"truncated", good[:len(good)-100], nil, ErrCorrupt, 0},
		// Verified before restoring: damage in b leaves a untouched.
		{"damaged late", patch(good, len(good)-200, ^good[len(good)-200]), nil, ErrCorrupt, 0},
		// a is restored, then put back when b fails (a second Restore,
		// of a's initial, empty state): all or nothing.
		{"restore fails", good, boom, boom, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.snap")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			a := &blob{name: "a"}
			reg := newRegistry(t, Options{}, a)
			reg.Register(Participant{Name: "b", Capture: func(io.Writer) error { return nil },
				Restore: func(r io.Reader) error { io.Copy(io.Discard, r); return tt.bFails }})
			_, err := ReadFile(path, reg)
			if !errors.Is(err, ErrMovedAside) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadFile = %v, want ErrMovedAside and %v", err, tt.wantErr)
			}
			if a.restored != tt.wantA || len(a.got) != 0 {
				t.Errorf("a restored %d times, want %d, and holds %d bytes, want none", a.restored, tt.wantA, len(a.got))
			}
			var moved *MovedAsideError
			if !errors.As(err, &moved) || moved.Path != path || !strings.HasPrefix(moved.NewPath, path+".corrupt-") {
				t.Fatalf("error %#v does not say where the file went", err)
			}
			if !strings.Contains(err.Error(), moved.NewPath) {
				t.Errorf("error %q does not name %s", err, moved.NewPath)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the file is still at %s", path)
			}
			if kept, err := os.ReadFile(moved.NewPath); err != nil || !bytes.Equal(kept, tt.content) {
				t.Errorf("moved file holds %d bytes (%v), want the original %d", len(kept), err, len(tt.content))
			}
			// The next start finds nothing to restore.
			if _, err := ReadFile(path, newRegistry(t, Options{}, &blob{name: "a"})); !errors.Is(err, ErrNoSnapshot) {
				t.Errorf("second ReadFile = %v, want ErrNoSnapshot", err)
			}
		})
	}
}

// assertDir fails unless dir holds exactly names.
func assertDir(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("directory holds %v, want %v", got, names)
	}
}
