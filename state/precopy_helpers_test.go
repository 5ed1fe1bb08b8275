package state

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// toyMap is a participant with a two-round handoff: a map of strings that
// keeps changing while its first round is captured, as a cache or a table of
// sessions does. It tracks the keys changed from its PreCopy.Capture on and
// writes them in its Delta. Its callbacks record their calls; the one named
// by panicIn panics, the one named by failIn fails.
type toyMap struct {
	name    string
	version uint32
	m       map[string]string
	want    bool

	tracking bool
	frozen   bool
	dirty    map[string]bool
	// duringCapture, if set, runs after PreCopy.Capture has written its
	// i-th entry: the component changing while it is copied.
	duringCapture func(i int)

	panicIn, failIn string
	calls           []string
	resets          int
}

func newToyMap(name string, n int) *toyMap {
	t := &toyMap{name: name, version: 1, m: make(map[string]string), want: true}
	for i := range n {
		t.m[fmt.Sprintf("key-%06d", i)] = fmt.Sprintf("value-%d", i)
	}
	return t
}

func (t *toyMap) set(k, v string) {
	t.m[k] = v
	if t.tracking {
		t.dirty[k] = true
	}
}

func (t *toyMap) del(k string) {
	delete(t.m, k)
	if t.tracking {
		t.dirty[k] = true
	}
}

// hook records the call of cb and panics or fails if told to.
func (t *toyMap) hook(cb string) error {
	t.calls = append(t.calls, cb)
	if t.panicIn == cb {
		var m map[string]int
		m[t.name]++ // assignment to entry in nil map
	}
	if t.failIn == cb {
		return fmt.Errorf("%s of %s fails", cb, t.name)
	}
	return nil
}

func (t *toyMap) called(cb string) int {
	n := 0
	for _, c := range t.calls {
		if c == cb {
			n++
		}
	}
	return n
}

// writeEntries writes keys as "s key value" lines, or "d key" for a key not
// in the map, calling after(i) after the i-th.
func (t *toyMap) writeEntries(w io.Writer, keys []string, after func(i int)) error {
	bw := bufio.NewWriter(w)
	for i, k := range keys {
		if v, ok := t.m[k]; ok {
			fmt.Fprintf(bw, "s %q %q\n", k, v)
		} else {
			fmt.Fprintf(bw, "d %q\n", k)
		}
		if after != nil {
			if err := bw.Flush(); err != nil {
				return err
			}
			after(i)
		}
	}
	return bw.Flush()
}

// apply reads lines written by writeEntries into t.m.
func (t *toyMap) apply(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		op, rest, _ := strings.Cut(line, " ")
		switch op {
		case "s":
			k, v, err := unquotePair(rest)
			if err != nil {
				return err
			}
			t.m[k] = v
		case "d":
			k, err := strconv.Unquote(rest)
			if err != nil {
				return err
			}
			delete(t.m, k)
		default:
			return fmt.Errorf("bad line %q", line)
		}
	}
	return sc.Err()
}

func unquotePair(s string) (string, string, error) {
	k, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", err
	}
	ku, _ := strconv.Unquote(k)
	vu, err := strconv.Unquote(strings.TrimPrefix(s[len(k):], " "))
	return ku, vu, err
}

func (t *toyMap) sortedKeys() []string { return slices.Sorted(maps.Keys(t.m)) }

func (t *toyMap) participant() Participant {
	return Participant{
		Name:    t.name,
		Version: t.version,
		Freeze: func(context.Context) error {
			t.frozen = true
			return t.hook("Freeze")
		},
		Thaw: func() { t.frozen = false; t.hook("Thaw") },
		Capture: func(w io.Writer) error {
			if err := t.hook("Capture"); err != nil {
				return err
			}
			return t.writeEntries(w, t.sortedKeys(), nil)
		},
		Restore: func(r io.Reader) error {
			if err := t.hook("Restore"); err != nil {
				return err
			}
			t.m = make(map[string]string)
			return t.apply(r)
		},
		Reset: func() {
			t.hook("Reset")
			t.resets++
			t.m = make(map[string]string)
		},
		PreCopy: &PreCopy{
			Want: func() bool { t.hook("PreCopy.Want"); return t.want },
			Capture: func(w io.Writer) error {
				t.tracking, t.dirty = true, make(map[string]bool)
				if err := t.hook("PreCopy.Capture"); err != nil {
					return err
				}
				return t.writeEntries(w, t.sortedKeys(), t.duringCapture)
			},
			Delta: func(w io.Writer) error {
				// A middle round starts the tracking over; the last
				// (frozen) ends it.
				dirty := t.dirty
				t.tracking, t.dirty = !t.frozen, make(map[string]bool)
				if err := t.hook("PreCopy.Delta"); err != nil {
					return err
				}
				return t.writeEntries(w, slices.Sorted(maps.Keys(dirty)), nil)
			},
			Stop: func() {
				t.tracking, t.dirty = false, nil
				t.hook("PreCopy.Stop")
			},
			Restore: func(r io.Reader) error {
				if err := t.hook("PreCopy.Restore"); err != nil {
					return err
				}
				t.m = make(map[string]string)
				return t.apply(r)
			},
			RestoreDelta: func(r io.Reader) error {
				if err := t.hook("PreCopy.RestoreDelta"); err != nil {
					return err
				}
				return t.apply(r)
			},
		},
	}
}

// churn makes t change while its first round is captured: after every
// fiftieth entry written it adds a key, changes one not written yet and one
// written already, and deletes one of each.
func (t *toyMap) churn() {
	t.duringCapture = func(i int) {
		if i%50 != 0 {
			return
		}
		t.set(fmt.Sprintf("new-%06d", i), "added during the copy")
		t.set(fmt.Sprintf("key-%06d", i+5), "changed before it was copied")
		t.set(fmt.Sprintf("key-%06d", i), "changed after it was copied")
		t.del(fmt.Sprintf("key-%06d", i+7))
		if i > 0 {
			t.del(fmt.Sprintf("key-%06d", i-3))
		}
	}
}

// assertSameMap fails unless got holds exactly want.
func assertSameMap(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		var diff []string
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				diff = append(diff, fmt.Sprintf("%s: got %q (present %v), want %q", k, g, ok, v))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, fmt.Sprintf("%s: got %q, want it absent", k, got[k]))
			}
		}
		slices.Sort(diff)
		if len(diff) > 5 {
			diff = append(diff[:5], fmt.Sprintf("... %d more", len(diff)-5))
		}
		t.Errorf("%s: %d entries, want %d:\n%s", what, len(got), len(want), strings.Join(diff, "\n"))
	}
}

// isPanic reports whether err is the *PanicError of participant name in
// callback cb.
func isPanic(err error, name, cb string) bool {
	var pe *PanicError
	return errors.As(err, &pe) && pe.Participant == name && pe.Callback == cb && errors.Is(err, ErrParticipantPanicked)
}
