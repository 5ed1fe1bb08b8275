package upgrader

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"go.uber.org/goleak"
)

// pidFileUpgrader is an Upgrader with only what the pid file needs, and
// the pid file as an earlier process left it: "1".
func pidFileUpgrader(t *testing.T) (*Upgrader, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "svc.pid")
	if err := os.WriteFile(path, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Upgrader{pidFile: path, log: slog.New(slog.DiscardHandler)}, path
}

// dirNames lists dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func wantPIDFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), strconv.Itoa(os.Getpid()); got != want {
		t.Fatalf("pid file holds %q, want %q", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("pid file mode %v, want 0600 (tableflip's)", fi.Mode().Perm())
	}
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{filepath.Base(path)}) {
		t.Errorf("the pid file's directory holds %q, want the pid file alone", names)
	}
}

// wantOldPIDFile checks that the directory holds the pid file alone, as
// the test wrote it ("1"), when a step is done.
func wantOldPIDFile(t *testing.T, path, when string) {
	t.Helper()
	if b, _ := os.ReadFile(path); string(b) != "1" {
		t.Fatalf("%s the pid file holds %q, want the old %q", when, b, "1")
	}
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{filepath.Base(path)}) {
		t.Fatalf("%s the directory holds %q, want the old pid file alone", when, names)
	}
}

// waitPrepared waits until the preparation New started is done, and fails
// unless it prepared a file.
func waitPrepared(t *testing.T, u *Upgrader) {
	t.Helper()
	f := <-u.pidPrepared
	ch := make(chan *os.File, 1) // as New left it: the file, then closed
	ch <- f
	close(ch)
	u.pidPrepared = ch
	if f == nil {
		t.Fatal("no file prepared (is O_TMPFILE supported here?)")
	}
}

// TestPIDFilePrepared: the file prepared ahead is invisible until the
// process becomes ready, then replaces the pid file whole, and leaves
// nothing else in the directory.
func TestPIDFilePrepared(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, path := pidFileUpgrader(t)
	u.preparePIDFile()
	waitPrepared(t, u)
	wantOldPIDFile(t, path, "before the ready")
	if err := u.writePIDFile(); err != nil {
		t.Fatal(err)
	}
	wantPIDFile(t, path)
	u.discardPIDFile() // taken already: nothing to do
	wantPIDFile(t, path)
}

// TestPIDFileDiscarded: a process that stops before it is ready leaves the
// pid file as it was and nothing beside it.
func TestPIDFileDiscarded(t *testing.T) {
	defer goleak.VerifyNone(t)
	u, path := pidFileUpgrader(t)
	u.preparePIDFile()
	u.discardPIDFile()
	wantOldPIDFile(t, path, "after the discard")
}

// TestPIDFileWrittenWithoutPreparation: with nothing prepared (no O_TMPFILE,
// or it was not asked for) the file is written at the ready.
func TestPIDFileWrittenWithoutPreparation(t *testing.T) {
	u, path := pidFileUpgrader(t)
	if err := u.writePIDFile(); err != nil {
		t.Fatal(err)
	}
	wantPIDFile(t, path)
}

// TestPIDFileStaleLinkName: a name left where the prepared file is linked
// (by a process of the same pid that died between the link and the
// rename), even a symbolic link, is replaced, not followed.
func TestPIDFileStaleLinkName(t *testing.T) {
	u, path := pidFileUpgrader(t)
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path+"."+strconv.Itoa(os.Getpid())+".new"); err != nil {
		t.Fatal(err)
	}
	u.preparePIDFile()
	waitPrepared(t, u)
	if err := u.writePIDFile(); err != nil {
		t.Fatal(err)
	}
	wantPIDFile(t, path)
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("the symbolic link's target was written: %q", b)
	}
}

// TestPIDFileNotPreparedInTime: a ready that comes before the preparation
// is done does not wait for it: it writes the file itself, and the
// prepared file, when it comes, is closed unused at the stop.
func TestPIDFileNotPreparedInTime(t *testing.T) {
	u, path := pidFileUpgrader(t)
	u.pidPrepared = make(chan *os.File, 1) // a preparation still running
	if err := u.writePIDFile(); err != nil {
		t.Fatal(err)
	}
	wantPIDFile(t, path)
	f, err := openPreparedPID(filepath.Dir(path), 1)
	if err != nil {
		t.Fatal(err)
	}
	u.pidPrepared <- f // the preparation ends
	u.discardPIDFile()
	wantPIDFile(t, path)
	if err := f.Close(); err == nil {
		t.Error("the prepared file was still open after the stop")
	}
}
