package state

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
)

// The pre-copy handoff (Participant.PreCopy) moves the state in rounds, so
// that the pause of an upgrade does not grow with the size of the state.
//
// In the old process, while every participant runs: PreCopySections picks
// the sections worth a first round for the reader, WritePreCopy (SendPreCopy)
// writes their PreCopy.Capture as a snapshot flagged as a first round, and
// each of them tracks what changes from then on. Any number of middle
// rounds may follow, still running (WritePreCopyDelta, SendPreCopyDelta):
// each holds every such section's PreCopy.Delta, what changed since the
// round before, and starts the tracking over. Then, after Freeze, the last
// round is the snapshot for the reader (WriteSnapshotFor, SendFor) as
// without a pre-copy, except that the sections of the first round go as
// deltas (PreCopy.Delta). If the upgrade ends before the last round,
// StopPreCopy ends the tracking.
//
// In the new process: ReadPreCopy (ReceivePreCopy) calls PreCopy.Restore
// per section for the first round and PreCopy.RestoreDelta for each middle
// one, and the last round (ReadSnapshot, Receive) calls
// PreCopy.RestoreDelta for the deltas and Restore for the others. The
// rounds are one restore, all or nothing: a failure in any undoes every
// restore of all (Participant.Reset), and so does DiscardPreCopy, for
// rounds whose last never comes. PROTOCOL.md has the bytes.

// check reports what a PreCopy lacks; nil is no PreCopy, which is fine.
func (pc *PreCopy) check() error {
	if pc == nil {
		return nil
	}
	var missing []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"Want", pc.Want != nil}, {"Capture", pc.Capture != nil}, {"Delta", pc.Delta != nil},
		{"Stop", pc.Stop != nil}, {"Restore", pc.Restore != nil}, {"RestoreDelta", pc.RestoreDelta != nil},
	} {
		if !f.set {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("its PreCopy lacks %v: all six functions are required", missing)
	}
	return nil
}

// PreCopySections returns, in registration order, the sections that a first
// round for the reader that accepts a would hold: those whose participant
// has a PreCopy here and there (a.PreCopy), whose version the reader
// restores as it is (a pre-copy is never migrated: a reader that needs a
// migration, such as an older release in a rollback, gets the section whole
// in the second round), and whose Want says yes now. None means that a
// single round is all it takes. It calls Want of those participants, and
// fails with the *PanicError of one that panicked.
func (r *Registry) PreCopySections(a Accepts) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for _, p := range r.parts {
		if !r.preCopyableLocked(p, a) {
			continue
		}
		var want bool
		if err := call(r.opts.Logger, p.Name, "PreCopy.Want", func() error { want = p.PreCopy.Want(); return nil }); err != nil {
			return nil, fmt.Errorf("pre-copy: %w", err)
		}
		if want {
			names = append(names, p.Name)
		}
	}
	return names, nil
}

// preCopyableLocked reports whether p can go in a first round for the
// reader that accepts a.
func (r *Registry) preCopyableLocked(p Participant, a Accepts) bool {
	return p.PreCopy != nil && slices.Contains(a.PreCopy, p.Name) &&
		slices.Contains(a.Sections[p.Name], p.Version) && slices.Contains(a.Formats, FormatVersion)
}

// WritePreCopy writes to w the first round of a pre-copy handoff for the
// reader that accepts a: a snapshot flagged as such, holding the sections
// named (as PreCopySections returned them), each written by its
// PreCopy.Capture while the participant runs. It returns the bytes written.
// From each Capture on, that participant tracks what changes, until the
// last round (WriteSnapshotFor, SendFor) writes its Delta, or StopPreCopy:
// call one of them whatever happens, an error here included. It fails with
// ErrPreCopy, writing nothing, if a section cannot go in a first round for
// a, or one is under way already.
func (r *Registry) WritePreCopy(w io.Writer, a Accepts, sections []string) (int64, error) {
	return r.writePreCopy(context.Background(), w, a, sections)
}

func (r *Registry) writePreCopy(ctx context.Context, w io.Writer, a Accepts, sections []string) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tracking) > 0 {
		return 0, fmt.Errorf("write pre-copy: %w: a first round is under way already (its last round or StopPreCopy comes first)", ErrPreCopy)
	}
	want := make(map[int]bool, len(sections))
	for _, name := range sections {
		i, ok := r.index[name]
		if !ok || !r.preCopyableLocked(r.parts[i], a) || want[i] {
			return 0, fmt.Errorf("write pre-copy: %w: section %q cannot go in a first round for this reader (unknown, without PreCopy on either side, at a version it does not restore as is, or named twice)", ErrPreCopy, name)
		}
		want[i] = true
	}
	e := newEncoder(ctx, w, r.opts.MaxSize)
	defer e.release()
	if err := e.header(r.build, flagPreCopy); err != nil {
		return e.off, fmt.Errorf("write pre-copy header: %w", err)
	}
	for i, p := range r.parts {
		if !want[i] {
			continue
		}
		if r.tracking == nil {
			r.tracking = make(map[int]bool)
		}
		// Tracking may have started even if Capture fails: Stop is due
		// from here on.
		r.tracking[i] = true
		if _, err := e.section(p.Name, p.Version, func(w io.Writer) error {
			return call(r.opts.Logger, p.Name, "PreCopy.Capture", func() error { return p.PreCopy.Capture(w) })
		}); err != nil {
			return e.off, fmt.Errorf("write pre-copy of section %q: %w", p.Name, err)
		}
	}
	return e.finish()
}

// writeDelta writes the delta of participant p, at position i, whose first
// round went before: its Delta, which ends the tracking whatever it
// returns. vs is the plan of its versions, which for a reader that took
// the first round is p's own.
func (r *Registry) writeDelta(e *encoder, p Participant, i int, vs []uint32) error {
	delete(r.tracking, i)
	if len(vs) != 1 || vs[0] != p.Version {
		// The accepts differ from the first round's: stop the tracking
		// the Delta would have ended.
		return errors.Join(fmt.Errorf("%w: the reader does not take version %d as is, which the first round sent", ErrPreCopy, p.Version),
			call(r.opts.Logger, p.Name, "PreCopy.Stop", func() error { p.PreCopy.Stop(); return nil }))
	}
	return r.deltaSection(e, p)
}

// deltaSection writes p's PreCopy.Delta as a delta section, in a middle
// round or the last.
func (r *Registry) deltaSection(e *encoder, p Participant) error {
	_, err := e.tagged(tagDelta, p.Name, p.Version, func(w io.Writer) error {
		return call(r.opts.Logger, p.Name, "PreCopy.Delta", func() error { return p.PreCopy.Delta(w) })
	})
	return err
}

// WritePreCopyDelta writes to w a middle round of a pre-copy handoff, after
// its first round (WritePreCopy) and before the last (WriteSnapshotFor,
// after Freeze): a snapshot flagged as such, holding a delta for every
// section of the first round, each written by its PreCopy.Delta while the
// participant runs: what changed since its Capture or its previous Delta
// began. Each Delta starts the tracking over, so that the next round holds
// what changes from then on. It returns the bytes written. It fails with
// ErrPreCopy, writing nothing, without a first round, once frozen (the
// last round is WriteSnapshotFor's) or after a middle round that failed.
// After any failure of its own, only StopPreCopy is left: the deltas of a
// later round would lack what this one held.
func (r *Registry) WritePreCopyDelta(w io.Writer) (int64, error) {
	return r.writePreCopyDelta(context.Background(), w)
}

func (r *Registry) writePreCopyDelta(ctx context.Context, w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case len(r.tracking) == 0:
		return 0, fmt.Errorf("write pre-copy delta: %w: no first round is under way (WritePreCopy comes first)", ErrPreCopy)
	case r.isFrozen:
		return 0, fmt.Errorf("write pre-copy delta: %w: the participants are frozen: the last round is WriteSnapshotFor's", ErrPreCopy)
	case r.preBroken:
		return 0, fmt.Errorf("write pre-copy delta: %w: an earlier middle round failed (StopPreCopy, then a new upgrade)", ErrPreCopy)
	}
	e := newEncoder(ctx, w, r.opts.MaxSize)
	defer e.release()
	n, err := r.writeMiddleLocked(e)
	if err != nil {
		r.preBroken = true
	}
	return n, err
}

// writeMiddleLocked writes a middle round with e.
func (r *Registry) writeMiddleLocked(e *encoder) (int64, error) {
	if err := e.header(r.build, flagPreCopy|flagDeltas); err != nil {
		return e.off, fmt.Errorf("write pre-copy delta header: %w", err)
	}
	for i, p := range r.parts {
		if !r.tracking[i] {
			continue
		}
		if err := r.deltaSection(e, p); err != nil {
			return e.off, fmt.Errorf("write the pre-copy delta of section %q: %w", p.Name, err)
		}
	}
	return e.finish()
}

// StopPreCopy ends a first round without a second: it calls PreCopy.Stop of
// every participant whose PreCopy.Capture was called and whose Delta was
// not, in reverse registration order. The old process calls it when an
// upgrade ends after a first round (the attempt failed, the new process
// died or rejected it); it does nothing otherwise, so it is safe on every
// path. A Stop that panics does not keep the others from being called: the
// error joins one *PanicError per panic, and reports only.
func (r *Registry) StopPreCopy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i := len(r.parts) - 1; i >= 0; i-- {
		if !r.tracking[i] {
			continue
		}
		p := r.parts[i]
		errs = append(errs, call(r.opts.Logger, p.Name, "PreCopy.Stop", func() error { p.PreCopy.Stop(); return nil }))
	}
	r.tracking, r.preBroken = nil, false
	return errors.Join(errs...)
}

// ReadPreCopy reads the first round of a pre-copy handoff from rd and calls
// PreCopy.Restore of each section's participant, as ReadSnapshot calls
// Restore: streaming, all or nothing (on error every restore of the round
// is undone). It fails with ErrPreCopy if rd is not a first round, if a
// section's participant has no PreCopy or another version, or if a first
// round is restored already.
//
// After a first round it reads the middle rounds (WritePreCopyDelta), each
// calling PreCopy.RestoreDelta of every participant the first round
// restored. Once a first round is restored, every round is part of one
// restore: a middle round that fails anywhere, or that is not a middle
// round, undoes every round so far. The restore is complete only with the
// last round (ReadSnapshot, Receive), which must hold a delta for every
// section restored here; until then DiscardPreCopy undoes the rounds.
func (r *Registry) ReadPreCopy(rd io.Reader) (Info, error) {
	return r.readSnapshot(context.Background(), rd, readPreCopy)
}

// DiscardPreCopy undoes the restores of a first round and the middle rounds
// after it whose last round will not come (the old process died or refused
// after them), as a failed
// restore is undone (Participant.Reset), so that the participants hold
// their initial state again. It does nothing without such a round. If an
// undo fails, the error wraps ErrPartialRestore and the process must not
// serve.
func (r *Registry) DiscardPreCopy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.preRestored == nil {
		return nil
	}
	return r.preUndoLocked(nil)
}

// SendPreCopy is WritePreCopy over conn, as Send writes a snapshot: the
// first round goes in a sealed memfd if it ends within 256 KiB, else on the
// stream, captured as it is sent; the peer calls ReceivePreCopy. It returns
// the bytes sent. Cancelling ctx aborts, as for Send. Whatever it returns,
// the last round (SendFor) or StopPreCopy is due.
func SendPreCopy(ctx context.Context, conn *net.UnixConn, reg *Registry, a Accepts, sections []string) (int64, error) {
	n, err := sendWith(ctx, conn, func(ctx context.Context, w io.Writer) (int64, error) {
		return reg.writePreCopy(ctx, w, a, sections)
	})
	if err != nil {
		return n, fmt.Errorf("pre-copy: %w", err)
	}
	return n, nil
}

// SendPreCopyDelta is WritePreCopyDelta over conn, as SendPreCopy writes
// the first round; the peer calls ReceivePreCopy. It returns the bytes
// sent.
func SendPreCopyDelta(ctx context.Context, conn *net.UnixConn, reg *Registry) (int64, error) {
	n, err := sendWith(ctx, conn, reg.writePreCopyDelta)
	if err != nil {
		return n, fmt.Errorf("pre-copy delta: %w", err)
	}
	return n, nil
}

// ReceivePreCopy reads a first or a middle round sent by SendPreCopy or
// SendPreCopyDelta from conn and restores it, as ReadPreCopy does; the
// transport is Receive's.
func ReceivePreCopy(ctx context.Context, conn *net.UnixConn, reg *Registry) (Info, error) {
	info, err := receiveWith(ctx, conn, reg, readPreCopy)
	if err != nil {
		return info, fmt.Errorf("pre-copy: %w", err)
	}
	return info, nil
}
