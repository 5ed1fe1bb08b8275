package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// WriteFile writes a snapshot of reg to path atomically: into a temporary
// file in the same directory, created with mode 0600, synced, renamed over
// path, and the directory synced, so that after a crash path holds either
// the previous snapshot or the new one, whole. It returns the bytes
// written. On error path is untouched and the temporary file removed.
// The caller freezes reg first if its participants need it.
func WriteFile(path string, reg *Registry) (int64, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("write snapshot file: %w", err)
	}
	tmp := f.Name()
	n, err := writeSync(f, reg)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("write snapshot file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return n, fmt.Errorf("write snapshot file %s: sync directory: %w", path, err)
	}
	return n, nil
}

// writeSync writes the snapshot into f, syncs and closes it.
func writeSync(f *os.File, reg *Registry) (int64, error) {
	n, err := reg.WriteSnapshot(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be synced there; NTFS journals renames
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// A MovedAsideError reports a snapshot file that ReadFile could not use
// and renamed so that it is kept but no longer in the way. It wraps both
// ErrMovedAside and the reason.
type MovedAsideError struct {
	Path    string // where the file was
	NewPath string // where it is now: Path+".corrupt-<UTC timestamp>"
	Err     error  // why it could not be used
}

// Error says where the file was, where it is now and why.
func (e *MovedAsideError) Error() string {
	return fmt.Sprintf("state: snapshot file %s moved aside to %s: %v", e.Path, e.NewPath, e.Err)
}

// Unwrap returns ErrMovedAside and the reason.
func (e *MovedAsideError) Unwrap() []error { return []error{ErrMovedAside, e.Err} }

// ReadFile restores reg from the snapshot file at path.
//
// A missing file is the normal first start: the error wraps ErrNoSnapshot
// and nothing happens. Otherwise the whole file is verified (framing,
// checksums, sections and versions readable) before any participant is
// touched, so a damaged file restores nothing; then it is restored as by
// ReadSnapshot, all or nothing.
//
// A file this binary cannot read because it was written by a newer
// release is not damaged: a section at a schema version it neither has nor
// migrates from (ErrUnknownVersion), a section it has no participant for
// (ErrUnknownSection), or a format it does not decode (ErrFormatVersion).
// Then nothing is restored and the file stays where it is; the error wraps
// that sentinel, and the caller says so and, typically, refuses to start,
// since the state would otherwise be overwritten at the next write.
//
// If the file cannot be read, fails verification otherwise, or a migration
// or Restore fails, it is renamed to path+".corrupt-<timestamp>" (never
// deleted) and the error is a *MovedAsideError wrapping ErrMovedAside and
// the cause: the caller logs it and chooses to start fresh or to refuse to
// start. The participants then hold their initial state, unless the error
// also wraps ErrPartialRestore. An error opening the file other than its
// absence, such as a permission problem, is returned as is and the file is
// left in place.
func ReadFile(path string, reg *Registry) (Info, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %w", ErrNoSnapshot, err)
	}
	if err != nil {
		return Info{}, fmt.Errorf("read snapshot file: %w", err)
	}
	info, err := verifyRestore(f, reg)
	f.Close()
	if err == nil {
		return info, nil
	}
	if unreadable(err) {
		// Written by a release that knows more than this one: the
		// file is not damaged, and the right binary reads it.
		return info, fmt.Errorf("read snapshot file %s: kept in place, this binary cannot read it: %w", path, err)
	}
	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if rerr := os.Rename(path, aside); rerr != nil {
		return info, fmt.Errorf("read snapshot file %s: %w (moving it aside failed too: %v)", path, err, rerr)
	}
	// Best effort: the rename is what keeps a bad file from being read
	// again, and the error is being reported already.
	_ = syncDir(filepath.Dir(path))
	return info, &MovedAsideError{Path: path, NewPath: aside, Err: err}
}

func verifyRestore(f *os.File, reg *Registry) (Info, error) {
	info, err := reg.Verify(f)
	if err != nil {
		return info, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return info, err
	}
	return reg.ReadSnapshot(f)
}

// unreadable reports whether err says a snapshot comes from a newer writer,
// rather than that it is damaged.
func unreadable(err error) bool {
	return errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrUnknownSection) || errors.Is(err, ErrFormatVersion)
}
