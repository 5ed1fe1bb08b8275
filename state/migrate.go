package state

import (
	"fmt"
	"sort"
)

// A MigrateFunc turns a section's bytes at one schema version into the bytes
// of the next version, like OTP's code_change.
type MigrateFunc func(old []byte) ([]byte, error)

type step struct {
	to uint32
	fn MigrateFunc
}

// Migrations is a set of steps between schema versions of one section. The
// zero value has no steps and is ready to use. It is not safe for concurrent
// mutation; register steps before use.
type Migrations struct {
	steps map[uint32]step // from -> step
}

// Add registers the step from -> to. Steps must go forward (to > from), and
// there is at most one step out of each version.
func (m *Migrations) Add(from, to uint32, fn MigrateFunc) error {
	if to <= from {
		return fmt.Errorf("%w: %d -> %d does not go forward", ErrBadMigration, from, to)
	}
	if fn == nil {
		return fmt.Errorf("%w: %d -> %d has no function", ErrBadMigration, from, to)
	}
	if m.steps == nil {
		m.steps = make(map[uint32]step)
	}
	if s, ok := m.steps[from]; ok {
		return fmt.Errorf("%w: %d -> %d clashes with %d -> %d", ErrBadMigration, from, to, from, s.to)
	}
	m.steps[from] = step{to: to, fn: fn}
	return nil
}

// Reads returns every version from which a chain of steps reaches target,
// target itself included, in ascending order.
func (m *Migrations) Reads(target uint32) []uint32 {
	out := []uint32{target}
	for from := range m.steps {
		if from < target && m.chain(from, target) {
			out = append(out, from)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (m *Migrations) chain(from, target uint32) bool {
	for v := from; v != target; {
		s, ok := m.steps[v]
		if !ok || s.to > target {
			return false
		}
		v = s.to
	}
	return true
}

// CanRead reports whether data at version from can be brought to target.
func (m *Migrations) CanRead(from, target uint32) bool {
	return from == target || (from < target && m.chain(from, target))
}

// Apply runs the chain of steps that brings data from version from to
// target. It returns an error wrapping ErrUnknownVersion when no chain exists.
func (m *Migrations) Apply(data []byte, from, target uint32) ([]byte, error) {
	if !m.CanRead(from, target) {
		return nil, fmt.Errorf("%w: no migration from version %d to %d", ErrUnknownVersion, from, target)
	}
	for v := from; v != target; {
		s := m.steps[v]
		out, err := s.fn(data)
		if err != nil {
			return nil, fmt.Errorf("migrate %d -> %d: %w", v, s.to, err)
		}
		data, v = out, s.to
	}
	return data, nil
}
