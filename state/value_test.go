package state

import (
	"bytes"
	"errors"
	"reflect"
	"sync"
	"testing"
)

type appState struct {
	Counter int
	Names   []string
	Limits  map[string]float64
}

func TestValueParticipants(t *testing.T) {
	helpers := []struct {
		name string
		make func(name string, version uint32, v *appState, mu sync.Locker) Participant
	}{
		{"json", JSON[appState]},
		{"gob", Gob[appState]},
	}
	for _, h := range helpers {
		t.Run(h.name, func(t *testing.T) {
			var mu sync.Mutex
			src := appState{Counter: 42, Names: []string{"a", "b"}, Limits: map[string]float64{"x": 1.5}}
			reg := newRegistry(t, Options{})
			if err := reg.Register(h.make("app", 1, &src, &mu)); err != nil {
				t.Fatal(err)
			}
			snap := snapshotOf(t, reg)

			dst := appState{Counter: -1, Names: []string{"stale"}}
			reg2 := newRegistry(t, Options{})
			if err := reg2.Register(h.make("app", 1, &dst, nil)); err != nil {
				t.Fatal(err)
			}
			if _, err := reg2.ReadSnapshot(bytes.NewReader(snap)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dst, src) {
				t.Errorf("restored %+v, want %+v", dst, src)
			}
		})
	}
}

func TestJSONRestoreFailureKeepsValue(t *testing.T) {
	reg := newRegistry(t, Options{})
	reg.Register(JSON("app", 1, &[]int{1, 2}, nil))
	snap := snapshotOf(t, reg)

	// The same section read as a different type fails to decode.
	dst := appState{Counter: 7}
	reg2 := newRegistry(t, Options{})
	reg2.Register(JSON("app", 1, &dst, nil))
	if _, err := reg2.ReadSnapshot(bytes.NewReader(snap)); err == nil {
		t.Fatal("ReadSnapshot succeeded")
	}
	if dst.Counter != 7 {
		t.Errorf("failed Restore changed the value to %+v", dst)
	}
}

func TestJSONMigration(t *testing.T) {
	type v1 struct{ Count int }
	type v2 struct{ Total int }
	old := v1{Count: 5}
	reg := newRegistry(t, Options{})
	reg.Register(JSON("app", 1, &old, nil))
	snap := snapshotOf(t, reg)

	var cur v2
	reg2 := newRegistry(t, Options{})
	reg2.Register(JSON("app", 2, &cur, nil))
	reg2.AddMigration("app", 1, 2, func(b []byte) ([]byte, error) {
		if !bytes.Contains(b, []byte(`"Count"`)) {
			return nil, errors.New("not a v1")
		}
		return bytes.Replace(b, []byte(`"Count"`), []byte(`"Total"`), 1), nil
	})
	if _, err := reg2.ReadSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if cur.Total != 5 {
		t.Errorf("migrated to %+v, want Total 5", cur)
	}
}
