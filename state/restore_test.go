package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cell is a participant holding one value that Capture writes and Restore
// replaces, as most components do. A failing Restore first overwrites the
// value, as a careless component might, so that the test sees whether it
// is undone too.
type cell struct {
	name   string
	val    string
	fail   error // the next Restore's error, after it overwrote val
	reset  bool  // has a Reset that sets val back to initial
	init   string
	resets *[]string // names of the cells reset, in order
}

func (c *cell) participant() Participant {
	p := Participant{
		Name:    c.name,
		Version: 1,
		Capture: func(w io.Writer) error { _, err := io.WriteString(w, c.val); return err },
		Restore: func(r io.Reader) error {
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			c.val = string(b)
			if err := c.fail; err != nil {
				c.fail = nil // once: the undo restores the previous value
				c.val = "half-restored"
				return err
			}
			return nil
		},
	}
	if c.reset {
		p.Reset = func() {
			c.val = c.init
			*c.resets = append(*c.resets, c.name)
		}
	}
	return p
}

// fiveCells returns five cells holding their initial values, and the
// registry they are registered in.
func fiveCells(t *testing.T, reset bool) ([]*cell, *Registry, *[]string) {
	t.Helper()
	reg, err := NewRegistry(Options{})
	if err != nil {
		t.Fatal(err)
	}
	resets := new([]string)
	var cells []*cell
	for i := 1; i <= 5; i++ {
		c := &cell{name: fmt.Sprintf("s%d", i), val: fmt.Sprintf("initial-%d", i), reset: reset, resets: resets}
		c.init = c.val
		if err := reg.Register(c.participant()); err != nil {
			t.Fatal(err)
		}
		cells = append(cells, c)
	}
	return cells, reg, resets
}

// fiveSections is a snapshot of five cells holding "restored-<i>".
func fiveSections(t *testing.T) []byte {
	t.Helper()
	src, reg, _ := fiveCells(t, false)
	for i, c := range src {
		c.val = fmt.Sprintf("restored-%d", i+1)
	}
	return snapshotOf(t, reg)
}

// checkInitial fails unless every cell holds its initial value.
func checkInitial(t *testing.T, cells []*cell) {
	t.Helper()
	for i, c := range cells {
		if want := fmt.Sprintf("initial-%d", i+1); c.val != want {
			t.Errorf("after the failed restore %s holds %q, want %q: a restore is all or nothing", c.name, c.val, want)
		}
	}
}

func TestRestoreIsAllOrNothing(t *testing.T) {
	good := fiveSections(t)
	// Damage the payload of section 3: a stream read restores 1 and 2
	// before it reaches the damage.
	i := bytes.Index(good, []byte("restored-3"))
	damaged := patch(good, i, 'X')
	boom := errors.New("boom")
	tests := []struct {
		name    string
		data    []byte
		fail    error // section 3's Restore error
		panics  bool  // section 3's Restore panics
		wantErr error
	}{
		{"third restore fails", good, boom, false, boom},
		{"third restore panics", good, nil, true, ErrParticipantPanicked},
		{"third section damaged", damaged, nil, false, ErrCorrupt},
	}
	for _, reset := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/reset=%v", tt.name, reset), func(t *testing.T) {
				cells, reg, resets := fiveCells(t, reset)
				cells[2].fail = tt.fail
				if tt.panics {
					p := cells[2].participant()
					p.Name = "s3"
					restore, once := p.Restore, false
					p.Restore = func(r io.Reader) error {
						err := restore(r)
						if !once {
							once = true
							cells[2].val = "half-restored"
							panic("boom")
						}
						return err
					}
					reg = replace(t, cells, p)
				}
				_, err := reg.ReadSnapshot(bytes.NewReader(tt.data))
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ReadSnapshot = %v, want %v", err, tt.wantErr)
				}
				if errors.Is(err, ErrPartialRestore) {
					t.Errorf("ReadSnapshot = %v: the undo should have worked", err)
				}
				checkInitial(t, cells)
				if reset {
					// Reset runs on each participant whose Restore was
					// called, the failing one included, last first.
					if got := strings.Join(*resets, ","); got != "s3,s2,s1" {
						t.Errorf("Reset called on %s, want s3,s2,s1", got)
					}
				}
			})
		}
	}
}

// replace returns a registry with cells' participants, p in place of the
// one of the same name.
func replace(t *testing.T, cells []*cell, p Participant) *Registry {
	t.Helper()
	reg, err := NewRegistry(Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cells {
		q := c.participant()
		if q.Name == p.Name {
			q = p
		}
		if err := reg.Register(q); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func TestRestoreSucceedsWhole(t *testing.T) {
	cells, reg, resets := fiveCells(t, true)
	if _, err := reg.ReadSnapshot(bytes.NewReader(fiveSections(t))); err != nil {
		t.Fatal(err)
	}
	for i, c := range cells {
		if want := fmt.Sprintf("restored-%d", i+1); c.val != want {
			t.Errorf("%s holds %q, want %q", c.name, c.val, want)
		}
	}
	if len(*resets) != 0 {
		t.Errorf("Reset called on %v after a successful restore", *resets)
	}
}

func TestRestoreUndoFails(t *testing.T) {
	// s1 has no Reset, and its Restore refuses the second call: the
	// registry cannot put it back, and says so.
	good := fiveSections(t)
	cells, _, _ := fiveCells(t, false)
	boom := errors.New("boom")
	cells[2].fail = boom
	calls := 0
	p := cells[0].participant()
	restore := p.Restore
	p.Restore = func(r io.Reader) error {
		if calls++; calls > 1 {
			return errors.New("restored once already")
		}
		return restore(r)
	}
	reg := replace(t, cells, p)
	_, err := reg.ReadSnapshot(bytes.NewReader(good))
	if !errors.Is(err, ErrPartialRestore) || !errors.Is(err, boom) {
		t.Fatalf("ReadSnapshot = %v, want ErrPartialRestore and the cause", err)
	}
	if !strings.Contains(err.Error(), `"s1"`) {
		t.Errorf("error %q does not name the participant left restored", err)
	}
}

func TestReadFileRestoresAllOrNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.snap")
	if err := os.WriteFile(path, fiveSections(t), 0o600); err != nil {
		t.Fatal(err)
	}
	cells, reg, _ := fiveCells(t, false)
	boom := errors.New("boom")
	cells[2].fail = boom
	_, err := ReadFile(path, reg)
	if !errors.Is(err, ErrMovedAside) || !errors.Is(err, boom) {
		t.Fatalf("ReadFile = %v, want ErrMovedAside and the cause", err)
	}
	checkInitial(t, cells)
}

func TestReadFileKeepsUnreadableVersion(t *testing.T) {
	// A file written by a newer release: a section at a version this
	// binary does not read, a section it has no participant for, a format
	// it does not decode. None is damage: the file is kept where it is,
	// for the release that can read it.
	newer := rawSnapshot(t, rawSection{"a", 1, []byte("x")}, rawSection{"b", 3, []byte("y")})
	unknown := rawSnapshot(t, rawSection{"a", 1, []byte("x")}, rawSection{"zz", 1, []byte("y")})
	format := patch(rawSnapshot(t, rawSection{"a", 1, []byte("x")}), 9, 2)
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"newer section version", newer, ErrUnknownVersion},
		{"unknown section", unknown, ErrUnknownSection},
		{"newer format", format, ErrFormatVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.snap")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			a := &blob{name: "a", version: 1}
			b := &blob{name: "b", version: 1}
			_, err := ReadFile(path, newRegistry(t, Options{}, a, b))
			if !errors.Is(err, tt.wantErr) || errors.Is(err, ErrMovedAside) {
				t.Fatalf("ReadFile = %v, want %v and not ErrMovedAside", err, tt.wantErr)
			}
			if a.restored != 0 || b.restored != 0 {
				t.Errorf("Restore called %d+%d times, want none", a.restored, b.restored)
			}
			if kept, err := os.ReadFile(path); err != nil || !bytes.Equal(kept, tt.data) {
				t.Errorf("the file at %s is gone or changed (%v)", path, err)
			}
			assertDir(t, dir, "state.snap")
			if _, err := os.Stat(path + ".corrupt"); !errors.Is(err, fs.ErrNotExist) {
				t.Error("a copy was moved aside")
			}
		})
	}
}

// discardLogger is a logger for registries whose tests provoke the panics
// it would report.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRestoreResetPanics(t *testing.T) {
	// s2's Reset panics while the failure of s3 is undone: s1 is still
	// put back, and the error says s2 could not be.
	cells, _, _ := fiveCells(t, true)
	boom := errors.New("boom")
	cells[2].fail = boom
	p := cells[1].participant()
	p.Reset = func() {
		var m map[string]int
		m["s2"]++
	}
	reg := replace(t, cells, p)
	var err error
	noPanic(t, "ReadSnapshot", func() { _, err = reg.ReadSnapshot(bytes.NewReader(fiveSections(t))) })
	if !errors.Is(err, boom) || !errors.Is(err, ErrPartialRestore) || !errors.Is(err, ErrParticipantPanicked) {
		t.Fatalf("ReadSnapshot = %v, want the cause, ErrPartialRestore and ErrParticipantPanicked", err)
	}
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Participant != "s2" || pe.Callback != "Reset" {
		t.Errorf("error %v does not name s2's Reset", err)
	}
	if cells[0].val != "initial-1" || cells[2].val != "initial-3" {
		t.Errorf("s1 = %q, s3 = %q: the other undos must run", cells[0].val, cells[2].val)
	}
}
