package worker

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// Periodic returns a Task that calls fn every interval with the task's state
// value. The changes fn makes to *st are kept (and checkpointed) when it
// returns nil, and rolled back when it fails or panics, so a retry sees the
// state of the last successful run. The value survives upgrades; set Kind,
// Version and Migrations on the result when its schema changes.
//
// The state is encoded with its MarshalBinary and UnmarshalBinary methods
// when *T has both, and with encoding/json otherwise; a T of size zero
// (struct{}) has no state and costs nothing. The returned Task may be
// added more than once under different IDs: each task keeps its own value.
func Periodic[T any](id string, every time.Duration, fn func(ctx context.Context, st *T) error) Task {
	c := codecFor[T]()
	run := func(ctx context.Context, r *Run) (err error) {
		ts, err := loadTyped(r, c)
		if err != nil {
			return err
		}
		ok := false
		defer func() {
			if c := r.t.typedCold(); !ok && c != nil {
				c.local = nil // roll back: reload the checkpoint next time
			}
		}()
		if err := fn(ctx, &ts.v); err != nil {
			return err
		}
		if c != nil {
			b, err := c.marshal(&ts.v)
			if err != nil {
				return fmt.Errorf("worker: task %q: encode state: %w", r.ID(), err)
			}
			if err := r.Checkpoint(b); err != nil {
				return err
			}
			if c := r.t.typedCold(); c != nil {
				c.localGen = r.t.stateGen
			}
		}
		ok = true
		return nil
	}
	return Task{ID: id, Every: every, Run: run, decode: c.decoder()}
}

// Loop returns a loop Task: fn runs until its context is cancelled and
// saves its progress with p.Save. After a failure, a Thaw or a Restore in
// the next process, fn starts again with p.Value() returning the last
// saved value. fn returning nil on its own (not because its context was
// cancelled) ends the task for good. State encoding is as for Periodic.
func Loop[T any](id string, fn func(ctx context.Context, p *Progress[T]) error) Task {
	c := codecFor[T]()
	run := func(ctx context.Context, r *Run) error {
		ts, err := loadTyped(r, c)
		if err != nil {
			return err
		}
		return fn(ctx, &Progress[T]{r: r, ts: ts, c: c})
	}
	return Task{ID: id, Run: run, decode: c.decoder()}
}

// Progress is a loop's view of its saved state.
type Progress[T any] struct {
	r  *Run
	ts *typed[T]
	c  *codec[T]
}

// Value returns the last saved value, or the zero value if none was saved.
func (p *Progress[T]) Value() T { return p.ts.v }

// Save checkpoints v: a restarted loop resumes from it. It returns
// ErrCutOff or ErrRemoved when the run should stop (see Run.Checkpoint),
// and an encoding error as is.
func (p *Progress[T]) Save(v T) error {
	if p.c != nil {
		b, err := p.c.marshal(&v)
		if err != nil {
			return fmt.Errorf("worker: task %q: encode state: %w", p.r.ID(), err)
		}
		if err := p.r.Checkpoint(b); err != nil {
			return err
		}
		if c := p.r.t.typedCold(); c != nil {
			c.localGen = p.r.t.stateGen
		}
	}
	p.ts.v = v
	return nil
}

// Run returns the run's handle, for its ID and sequence number.
func (p *Progress[T]) Run() *Run { return p.r }

type typed[T any] struct{ v T }

// typedCold returns where t's run keeps its typed value without the lock:
// the cold part that a task with a decoder and its run records are made
// with (see newTask), else nil. A typed Run used without its decoder (as a
// Kind's Run, or one of a stateless T) then decodes its state at every
// run. It reads t.cold only when t was made with it: otherwise the lock's
// holders may be setting it.
func (t *task) typedCold() *coldTask {
	if t.spec.decode == nil {
		return nil
	}
	return t.cold
}

// loadTyped returns the task's typed value, decoding the checkpoint when it
// changed since the value was last in step with it (first run, Restore,
// rollback).
func loadTyped[T any](r *Run, c *codec[T]) (*typed[T], error) {
	t := r.t
	tc := t.typedCold()
	if tc != nil {
		if ts, ok := tc.local.(*typed[T]); ok && tc.localGen == t.stateGen {
			return ts, nil
		}
	}
	ts := new(typed[T])
	if c != nil && t.stateLen > 0 {
		if err := c.unmarshal(t.state(), &ts.v); err != nil {
			return nil, fmt.Errorf("%w: task %q: %w", ErrBadState, t.id, err)
		}
	}
	if tc != nil {
		tc.local, tc.localGen = ts, t.stateGen
	}
	return ts, nil
}

type codec[T any] struct {
	marshal   func(*T) ([]byte, error)
	unmarshal func([]byte, *T) error
}

// codecFor picks T's encoding; nil for a T without state.
func codecFor[T any]() *codec[T] {
	if reflect.TypeFor[T]().Size() == 0 {
		return nil
	}
	var p any = new(T)
	_, bm := p.(encoding.BinaryMarshaler)
	_, bu := p.(encoding.BinaryUnmarshaler)
	if bm && bu {
		return &codec[T]{
			marshal:   func(v *T) ([]byte, error) { return any(v).(encoding.BinaryMarshaler).MarshalBinary() },
			unmarshal: func(b []byte, v *T) error { return any(v).(encoding.BinaryUnmarshaler).UnmarshalBinary(b) },
		}
	}
	return &codec[T]{
		marshal:   func(v *T) ([]byte, error) { return json.Marshal(v) },
		unmarshal: func(b []byte, v *T) error { return json.Unmarshal(b, v) },
	}
}

// decoder returns the Task.decode hook that lets Restore check state bytes
// and keep the decoded value.
func (c *codec[T]) decoder() func([]byte) (any, error) {
	if c == nil {
		return nil
	}
	return func(b []byte) (any, error) {
		ts := new(typed[T])
		if err := c.unmarshal(b, &ts.v); err != nil {
			return nil, err
		}
		return ts, nil
	}
}
