package state

import (
	"fmt"
	"sort"
)

// A MigrateFunc turns a section's bytes at one schema version into the bytes
// of another, like OTP's code_change: the next version up, or, for a
// down-migration, the one below.
type MigrateFunc func(old []byte) ([]byte, error)

type step struct {
	to uint32
	fn MigrateFunc
}

// Migrations is a set of steps between schema versions of one section. The
// zero value has no steps and is ready to use. It is not safe for concurrent
// mutation; register steps before use.
//
// Steps go up (from < to), to read what an older release wrote, or down
// (from > to), to write what an older release reads: a rollback. A binary
// only knows the versions up to its own, so the way down is registered by
// the newer release, which runs it when it writes (see Registry.Manifest).
type Migrations struct {
	up   map[uint32]step // from -> step, to > from
	down map[uint32]step // from -> step, to < from
}

// Add registers the step from -> to, up if to > from, down if to < from.
// There is at most one step up and one step down out of each version.
func (m *Migrations) Add(from, to uint32, fn MigrateFunc) error {
	if to == from {
		return fmt.Errorf("%w: %d -> %d goes nowhere", ErrBadMigration, from, to)
	}
	if fn == nil {
		return fmt.Errorf("%w: %d -> %d has no function", ErrBadMigration, from, to)
	}
	steps := &m.up
	if to < from {
		steps = &m.down
	}
	if *steps == nil {
		*steps = make(map[uint32]step)
	}
	if s, ok := (*steps)[from]; ok {
		return fmt.Errorf("%w: %d -> %d clashes with %d -> %d", ErrBadMigration, from, to, from, s.to)
	}
	(*steps)[from] = step{to: to, fn: fn}
	return nil
}

// Reads returns every version from which a chain of steps reaches target,
// target itself included, in ascending order: older versions through steps
// up, newer ones through steps down.
func (m *Migrations) Reads(target uint32) []uint32 {
	out := []uint32{target}
	for _, steps := range []map[uint32]step{m.up, m.down} {
		for from := range steps {
			if from != target && m.chain(from, target) {
				out = append(out, from)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Writes returns the versions below from that steps down reach, in the
// order of the chain (descending): what a snapshot can carry besides from,
// for an older reader.
func (m *Migrations) Writes(from uint32) []uint32 {
	var out []uint32
	for v := from; ; {
		s, ok := m.down[v]
		if !ok {
			return out
		}
		out = append(out, s.to)
		v = s.to
	}
}

// chain reports whether steps lead from from to target without passing it.
func (m *Migrations) chain(from, target uint32) bool {
	steps, past := m.up, func(v uint32) bool { return v > target }
	if from > target {
		steps, past = m.down, func(v uint32) bool { return v < target }
	}
	for v := from; v != target; {
		s, ok := steps[v]
		if !ok || past(s.to) {
			return false
		}
		v = s.to
	}
	return true
}

// CanRead reports whether data at version from can be brought to target.
func (m *Migrations) CanRead(from, target uint32) bool {
	return from == target || m.chain(from, target)
}

// Apply runs the chain of steps that brings data from version from to
// target, up or down. It returns an error wrapping ErrUnknownVersion when no
// chain exists.
func (m *Migrations) Apply(data []byte, from, target uint32) ([]byte, error) {
	if !m.CanRead(from, target) {
		return nil, fmt.Errorf("%w: no migration from version %d to %d", ErrUnknownVersion, from, target)
	}
	steps := m.up
	if from > target {
		steps = m.down
	}
	for v := from; v != target; {
		s := steps[v]
		out, err := s.fn(data)
		if err != nil {
			return nil, fmt.Errorf("migrate %d -> %d: %w", v, s.to, err)
		}
		data, v = out, s.to
	}
	return data, nil
}
