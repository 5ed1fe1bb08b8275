package state

import (
	"errors"
	"slices"
	"testing"
)

func appendByte(c byte) MigrateFunc {
	return func(old []byte) ([]byte, error) { return append(old, c), nil }
}

func TestMigrationsAdd(t *testing.T) {
	tests := []struct {
		name     string
		from, to uint32
		fn       MigrateFunc
		wantErr  error
	}{
		{"forward", 1, 2, appendByte('x'), nil},
		{"down", 2, 1, appendByte('x'), nil},
		{"same version", 2, 2, appendByte('x'), ErrBadMigration},
		{"nil function", 1, 2, nil, ErrBadMigration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Migrations
			if err := m.Add(tt.from, tt.to, tt.fn); !errors.Is(err, tt.wantErr) {
				t.Errorf("Add(%d, %d) = %v, want %v", tt.from, tt.to, err, tt.wantErr)
			}
		})
	}
	t.Run("clash", func(t *testing.T) {
		var m Migrations
		if err := m.Add(1, 2, appendByte('a')); err != nil {
			t.Fatal(err)
		}
		if err := m.Add(1, 3, appendByte('b')); !errors.Is(err, ErrBadMigration) {
			t.Errorf("second step out of 1: %v, want ErrBadMigration", err)
		}
		// One step up and one down out of a version do not clash.
		if err := m.Add(2, 1, appendByte('c')); err != nil {
			t.Errorf("step down out of 2 beside 1 -> 2: %v", err)
		}
		if err := m.Add(2, 0, appendByte('d')); !errors.Is(err, ErrBadMigration) {
			t.Errorf("second step down out of 2: %v, want ErrBadMigration", err)
		}
	})
}

func TestMigrationsChain(t *testing.T) {
	var m Migrations
	for _, s := range []struct{ from, to uint32 }{{1, 2}, {2, 4}, {4, 5}, {3, 6}} {
		if err := m.Add(s.from, s.to, appendByte(byte('0'+s.to))); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := m.Reads(5), []uint32{1, 2, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("Reads(5) = %v, want %v", got, want)
	}
	if got, want := m.Reads(6), []uint32{3, 6}; !slices.Equal(got, want) {
		t.Errorf("Reads(6) = %v, want %v", got, want)
	}
	tests := []struct {
		from, to uint32
		want     string
		wantErr  error
	}{
		{1, 5, "245", nil},
		{2, 4, "4", nil},
		{5, 5, "", nil},
		{3, 5, "", ErrUnknownVersion}, // 3 leads to 6, past 5
		{5, 1, "", ErrUnknownVersion}, // no going back
		{7, 8, "", ErrUnknownVersion},
	}
	for _, tt := range tests {
		out, err := m.Apply(nil, tt.from, tt.to)
		if !errors.Is(err, tt.wantErr) || string(out) != tt.want {
			t.Errorf("Apply(%d -> %d) = %q, %v; want %q, %v", tt.from, tt.to, out, err, tt.want, tt.wantErr)
		}
		if can := m.CanRead(tt.from, tt.to); can != (tt.wantErr == nil) {
			t.Errorf("CanRead(%d, %d) = %v", tt.from, tt.to, can)
		}
	}
	t.Run("step fails", func(t *testing.T) {
		var m Migrations
		boom := errors.New("boom")
		m.Add(1, 2, func([]byte) ([]byte, error) { return nil, boom })
		if _, err := m.Apply([]byte("x"), 1, 2); !errors.Is(err, boom) {
			t.Errorf("Apply = %v, want the step's error", err)
		}
	})
}

func TestMigrationsDown(t *testing.T) {
	var m Migrations
	for _, s := range []struct{ from, to uint32 }{{1, 2}, {2, 3}, {3, 2}, {2, 1}, {5, 4}} {
		if err := m.Add(s.from, s.to, appendByte(byte('0'+s.to))); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := m.Reads(2), []uint32{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("Reads(2) = %v, want %v", got, want)
	}
	if got, want := m.Writes(3), []uint32{2, 1}; !slices.Equal(got, want) {
		t.Errorf("Writes(3) = %v, want %v", got, want)
	}
	if got := m.Writes(1); len(got) != 0 {
		t.Errorf("Writes(1) = %v, want none", got)
	}
	if m.CanRead(5, 2) || m.CanRead(4, 2) {
		t.Error("CanRead across a gap in the steps down")
	}
	got, err := m.Apply([]byte("v"), 3, 1)
	if err != nil || string(got) != "v21" {
		t.Errorf("Apply(3 -> 1) = %q, %v; want \"v21\"", got, err)
	}
	if _, err := m.Apply(nil, 5, 1); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Apply(5 -> 1) = %v, want ErrUnknownVersion", err)
	}
}
