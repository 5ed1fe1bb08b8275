package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
)

// DefaultMaxSize is the default Options.MaxSize: 4 GiB. The snapshot is
// held in memory during a handoff (in a memfd, beside the live state of
// both processes), so a service whose state approaches this size should
// keep it in a database instead; the limit stops a runaway Capture or a
// damaged stream long before the machine runs out of memory. Decoding never
// allocates according to a length field, so the limit bounds bytes actually
// received, not a promise made by the input.
const DefaultMaxSize int64 = 4 << 30

// UnknownSectionPolicy says what ReadSnapshot does with a section that no
// participant registered.
type UnknownSectionPolicy int

const (
	// FailUnknown makes ReadSnapshot fail with ErrUnknownSection: state
	// the new binary cannot place is lost otherwise. It is the zero value.
	FailUnknown UnknownSectionPolicy = iota
	// IgnoreUnknown makes ReadSnapshot verify and skip the section, and
	// list it in Info.Skipped: use it when a release drops a component
	// on purpose.
	IgnoreUnknown
)

// Options configures a Registry. The zero value is ready to use.
type Options struct {
	// MaxSize is the largest snapshot, in bytes, that WriteSnapshot
	// writes and ReadSnapshot reads; beyond it they fail with
	// ErrTooLarge. It also bounds the buffer of a section that needs a
	// migration. Zero means DefaultMaxSize.
	MaxSize int64

	// UnknownSections says what ReadSnapshot does with a section that no
	// participant registered. Zero means FailUnknown.
	UnknownSections UnknownSectionPolicy

	// UserVersion is written into snapshots as Build.User, for the
	// application's own release name. At most MaxUserVersion bytes. Empty
	// means none.
	UserVersion string

	// Logger receives what the registry reports on its own, such as a
	// participant's recovered panic with its stack. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// A Registry holds the participants whose state moves across an upgrade
// and the migrations that bring older sections up to date. It is safe for
// concurrent use; its operations run one at a time, so a participant's
// functions must not call back into the Registry. A Registry is reused
// across upgrades: an aborted handoff ends with Thaw and the next one
// starts with Freeze again.
type Registry struct {
	mu         sync.Mutex
	opts       Options                // set once by NewRegistry
	build      Build                  // set once by NewRegistry
	parts      []Participant          // in registration order
	index      map[string]int         // name -> position in parts
	migrations map[string]*Migrations // section name -> steps
	frozen     []int                  // positions of frozen participants, in freezing order
	isFrozen   bool                   // Freeze succeeded and Thaw has not run

	// The pre-copy handoff (precopy.go). In the writer, tracking holds the
	// positions of the participants whose PreCopy.Capture was called and
	// neither Delta nor Stop since. In the reader, preRestored holds those
	// that a first round restored (nil: none was read), and preUndo how
	// to undo it and the middle rounds after it, until the last round or
	// DiscardPreCopy.
	tracking    map[int]bool
	preBroken   bool // a middle round failed: only StopPreCopy is left
	preRestored map[int]bool
	preUndo     undoLog
}

// NewRegistry returns an empty Registry. It fails with ErrInvalidOptions
// if MaxSize is negative, UnknownSections is not a known policy or
// UserVersion is too long.
func NewRegistry(opts Options) (*Registry, error) {
	if opts.MaxSize < 0 {
		return nil, fmt.Errorf("%w: MaxSize %d is negative", ErrInvalidOptions, opts.MaxSize)
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.UnknownSections != FailUnknown && opts.UnknownSections != IgnoreUnknown {
		return nil, fmt.Errorf("%w: UnknownSections %d is not a policy", ErrInvalidOptions, opts.UnknownSections)
	}
	if len(opts.UserVersion) > MaxUserVersion {
		return nil, fmt.Errorf("%w: UserVersion is %d bytes, at most %d allowed", ErrInvalidOptions, len(opts.UserVersion), MaxUserVersion)
	}
	return &Registry{
		opts:       opts,
		build:      currentBuild(opts.UserVersion),
		index:      make(map[string]int),
		migrations: make(map[string]*Migrations),
	}, nil
}

// Build returns what this binary writes into its snapshots about itself.
func (r *Registry) Build() Build {
	return r.build // set once by NewRegistry
}

// Register adds p. Its name must be 1 to 64 bytes of [a-z0-9._-] and new to
// the registry, and it must have Capture and Restore, and, if it has a
// PreCopy, all six of its functions. Sections are written
// in registration order. Register fails with ErrFrozen while the registry
// is frozen, since p would be captured without having been frozen.
func (r *Registry) Register(p Participant) error {
	if !validName(p.Name) {
		return fmt.Errorf("%w: name %q must be 1 to %d bytes of [a-z0-9._-]", ErrInvalidParticipant, p.Name, maxName)
	}
	if p.Capture == nil || p.Restore == nil {
		return fmt.Errorf("%w: %q needs both Capture and Restore", ErrInvalidParticipant, p.Name)
	}
	if err := p.PreCopy.check(); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidParticipant, p.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isFrozen {
		return fmt.Errorf("register %q: %w", p.Name, ErrFrozen)
	}
	if _, ok := r.index[p.Name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateParticipant, p.Name)
	}
	r.index[p.Name] = len(r.parts)
	r.parts = append(r.parts, p)
	return nil
}

// AddMigration registers the step that turns section's bytes at schema
// version from into version to (see Migrations.Add): up (from < to) to
// read an older release's state, or down (from > to) to write state that
// an older release reads, for a rollback (PROTOCOL.md, "Alternates"). The
// participant may be registered before or after its migrations.
func (r *Registry) AddMigration(section string, from, to uint32, fn MigrateFunc) error {
	if !validName(section) {
		return fmt.Errorf("%w: section name %q must be 1 to %d bytes of [a-z0-9._-]", ErrBadMigration, section, maxName)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.migrations[section]
	if m == nil {
		m = new(Migrations)
		r.migrations[section] = m
	}
	if err := m.Add(from, to, fn); err != nil {
		return fmt.Errorf("section %q: %w", section, err)
	}
	return nil
}

// Accepts is what a process can read, declared by the new process to the
// old one before any state is frozen. It encodes to JSON for the
// upgrader's handshake.
type Accepts struct {
	// Formats lists the snapshot format versions the reader decodes.
	Formats []uint16 `json:"formats"`
	// Sections maps each registered section to the schema versions the
	// reader restores, directly or through migrations, ascending.
	Sections map[string][]uint32 `json:"sections"`
	// IgnoreUnknown reports that the reader skips sections missing from
	// Sections instead of failing.
	IgnoreUnknown bool `json:"ignore_unknown,omitempty"`
	// PreCopy lists the sections whose participants take a first round
	// (Participant.PreCopy), in registration order: a writer pre-copies
	// only those (PreCopySections). A reader of an older release has none.
	PreCopy []string `json:"pre_copy,omitempty"`
}

// Manifest is what a process would write: the format version and each
// section's name and schema version, in order. It is known before anything
// is frozen or captured.
type Manifest struct {
	Format   uint16    `json:"format"`
	Sections []Section `json:"sections"`
	// Downgrades lists, per section, the older versions that its steps
	// down reach, newest first: the writer can also produce them, for an
	// older reader (a rollback). Sections without steps down are absent.
	Downgrades map[string][]uint32 `json:"downgrades,omitempty"`
}

// Accepts returns what this process reads, to be sent to the old process.
func (r *Registry) Accepts() Accepts {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := Accepts{
		Formats:       []uint16{FormatVersion},
		Sections:      make(map[string][]uint32, len(r.parts)),
		IgnoreUnknown: r.opts.UnknownSections == IgnoreUnknown,
	}
	for _, p := range r.parts {
		if m := r.migrations[p.Name]; m != nil {
			a.Sections[p.Name] = m.Reads(p.Version)
		} else {
			a.Sections[p.Name] = []uint32{p.Version}
		}
		if p.PreCopy != nil {
			a.PreCopy = append(a.PreCopy, p.Name)
		}
	}
	return a
}

// Manifest returns what this registry writes: each section at its own
// version and, in Downgrades, the versions its steps down also reach.
func (r *Registry) Manifest() Manifest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.manifestLocked()
}

func (r *Registry) manifestLocked() Manifest {
	m := Manifest{Format: FormatVersion, Sections: make([]Section, 0, len(r.parts))}
	for _, p := range r.parts {
		m.Sections = append(m.Sections, Section{Name: p.Name, Version: p.Version})
		if mig := r.migrations[p.Name]; mig != nil {
			if down := mig.Writes(p.Version); len(down) > 0 {
				if m.Downgrades == nil {
					m.Downgrades = make(map[string][]uint32)
				}
				m.Downgrades[p.Name] = down
			}
		}
	}
	return m
}

// Check reports whether a reader that accepts a can read a snapshot
// described by m: for each section, its version or one of its Downgrades
// must be among the versions the reader restores. The error joins one
// error per problem, each naming the section and versions and wrapping
// ErrFormatVersion, ErrUnknownSection or ErrUnknownVersion. Sections the
// reader has that m lacks are not an error: that participant is simply not
// restored.
func (a Accepts) Check(m Manifest) error {
	var errs []error
	if !slices.Contains(a.Formats, m.Format) {
		errs = append(errs, fmt.Errorf("%w: snapshot format %d, the reader decodes %v", ErrFormatVersion, m.Format, a.Formats))
	}
	for _, s := range m.Sections {
		versions, ok := a.Sections[s.Name]
		switch {
		case !ok && a.IgnoreUnknown:
		case !ok:
			errs = append(errs, fmt.Errorf("%w: section %q (version %d): the reader has no participant for it and does not ignore unknown sections", ErrUnknownSection, s.Name, s.Version))
		case slices.Contains(versions, s.Version):
		case slices.ContainsFunc(m.Downgrades[s.Name], func(v uint32) bool { return slices.Contains(versions, v) }):
		case len(m.Downgrades[s.Name]) > 0:
			errs = append(errs, fmt.Errorf("%w: section %q is at version %d and can be migrated down to %v, the reader restores versions %v", ErrUnknownVersion, s.Name, s.Version, m.Downgrades[s.Name], versions))
		default:
			errs = append(errs, fmt.Errorf("%w: section %q is at version %d, the reader restores versions %v; register a migration down (AddMigration from %d) to roll back", ErrUnknownVersion, s.Name, s.Version, versions, s.Version))
		}
	}
	return errors.Join(errs...)
}

// CheckReadable reports whether a reader that accepts a can read what this
// registry writes for it (WriteSnapshotFor, SendFor): a.Check(r.Manifest()).
// The old process calls it before Freeze, so that an incompatible new
// binary is refused with nothing disturbed.
func (r *Registry) CheckReadable(a Accepts) error {
	return a.Check(r.Manifest())
}

// Freeze calls each participant's Freeze in registration order, with ctx.
// If one fails or panics (a *PanicError), those already frozen are thawed in
// reverse order and the error names the participant; a panic of their Thaw
// is joined to it. Freeze fails with ErrFrozen if the registry is already
// frozen.
func (r *Registry) Freeze(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isFrozen {
		return fmt.Errorf("freeze: %w", ErrFrozen)
	}
	for i, p := range r.parts {
		if err := ctx.Err(); err != nil {
			return errors.Join(fmt.Errorf("freeze %q: %w", p.Name, err), r.thawLocked())
		}
		if p.Freeze != nil {
			if err := call(r.opts.Logger, p.Name, "Freeze", func() error { return p.Freeze(ctx) }); err != nil {
				return errors.Join(fmt.Errorf("freeze %q: %w", p.Name, err), r.thawLocked())
			}
		}
		r.frozen = append(r.frozen, i)
	}
	r.isFrozen = true
	return nil
}

// Thaw calls Thaw on every frozen participant, in reverse order of
// freezing. Without a successful Freeze it does nothing, so it is safe to
// call on every abort path. A Thaw that panics does not stop the others:
// the registry is thawed whatever happens, and the error joins one
// *PanicError per panic (nil if none did). It only reports: the caller
// has nothing to undo.
func (r *Registry) Thaw() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.thawLocked()
}

func (r *Registry) thawLocked() error {
	var errs []error
	for i := len(r.frozen) - 1; i >= 0; i-- {
		if p := r.parts[r.frozen[i]]; p.Thaw != nil {
			errs = append(errs, call(r.opts.Logger, p.Name, "Thaw", func() error { p.Thaw(); return nil }))
		}
	}
	r.frozen = r.frozen[:0]
	r.isFrozen = false
	return errors.Join(errs...)
}

// WriteSnapshot captures every participant, in registration order, into a
// snapshot written to w as it is produced; memory use does not grow with
// the size of the state. It returns the bytes written. The caller freezes
// first when participants need it; WriteSnapshot only calls Capture. On
// error the bytes already written are not a valid snapshot.
//
// The reader is not known (a state file), so a section whose participant
// has steps down (AddMigration with from > to) is also written at every
// version they reach, newest first, as alternates (PROTOCOL.md): an older
// release reads the newest one it knows. Such a section is captured whole
// into memory (at most MaxSize) to be migrated.
func (r *Registry) WriteSnapshot(w io.Writer) (int64, error) {
	return r.writeSnapshot(context.Background(), w, nil)
}

// WriteSnapshotFor is WriteSnapshot for a reader that accepts a: each
// section is written once, at the newest version that a reads among this
// participant's own and those its steps down reach. It fails, writing
// nothing, with the error of a.Check if a cannot read the result. A
// snapshot written for a reader that accepts the producer's own versions is
// exactly what WriteSnapshot writes without steps down.
//
// After a first round (WritePreCopy, SendPreCopy) it writes the second: the
// sections the first round held go as deltas (PreCopy.Delta, which ends
// their tracking; PROTOCOL.md), the others whole, as always. WriteSnapshot
// and WriteFile, whose reader is unknown, always write every section
// whole.
func (r *Registry) WriteSnapshotFor(w io.Writer, a Accepts) (int64, error) {
	return r.writeSnapshot(context.Background(), w, &a)
}

// writeSnapshot writes for the reader that accepts a, or for any reader if
// a is nil; it stops between chunks once ctx is done.
func (r *Registry) writeSnapshot(ctx context.Context, w io.Writer, a *Accepts) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	plan, err := r.planLocked(a)
	if err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	var flags uint16
	for _, vs := range plan {
		if len(vs) > 1 {
			flags |= flagAlternates
		}
	}
	// A second round: only for the reader named, never alternates (one
	// version per section for a known reader).
	deltas := a != nil && len(r.tracking) > 0
	if deltas {
		flags = flagDeltas
		if r.preBroken {
			return 0, fmt.Errorf("write snapshot: %w: a middle round failed, so the deltas would lack what it held (StopPreCopy, then a new upgrade)", ErrPreCopy)
		}
	}
	e := newEncoder(ctx, w, r.opts.MaxSize)
	defer e.release()
	if err := e.header(r.build, flags); err != nil {
		return e.off, fmt.Errorf("write snapshot header: %w", err)
	}
	for i, p := range r.parts {
		if deltas && r.tracking[i] {
			if err := r.writeDelta(e, p, i, plan[i]); err != nil {
				return e.off, fmt.Errorf("write the delta of section %q: %w", p.Name, err)
			}
			continue
		}
		capture := func(w io.Writer) error {
			return call(r.opts.Logger, p.Name, "Capture", func() error { return p.Capture(w) })
		}
		if vs := plan[i]; len(vs) == 1 && vs[0] == p.Version {
			if _, err := e.section(p.Name, p.Version, capture); err != nil {
				return e.off, fmt.Errorf("write section %q: %w", p.Name, err)
			}
			continue
		}
		if err := r.writeMigrated(e, p, plan[i], capture); err != nil {
			return e.off, fmt.Errorf("write section %q: %w", p.Name, err)
		}
	}
	return e.finish()
}

// planLocked returns, per participant, the versions its section is written
// at, in order: for the reader that accepts a, the newest it reads; for any
// reader (a nil), the participant's own and then every version its steps
// down reach.
func (r *Registry) planLocked(a *Accepts) ([][]uint32, error) {
	if a != nil {
		if err := a.Check(r.manifestLocked()); err != nil {
			return nil, err
		}
	}
	plan := make([][]uint32, len(r.parts))
	for i, p := range r.parts {
		vs := []uint32{p.Version}
		if m := r.migrations[p.Name]; m != nil {
			vs = append(vs, m.Writes(p.Version)...)
		}
		if a != nil {
			// Check passed: the reader either reads one of vs (the
			// first is the newest) or ignores the section.
			reads, ok := a.Sections[p.Name]
			j := slices.IndexFunc(vs, func(v uint32) bool { return slices.Contains(reads, v) })
			if !ok || j < 0 {
				j = 0
			}
			vs = vs[j : j+1]
		}
		plan[i] = vs
	}
	return plan, nil
}

// writeMigrated captures p whole and writes it at each version of vs in
// turn, migrating down from p.Version along the chain.
func (r *Registry) writeMigrated(e *encoder, p Participant, vs []uint32, capture func(io.Writer) error) error {
	buf := &limitedBuffer{max: r.opts.MaxSize}
	if err := capture(buf); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	data, at := buf.Bytes(), p.Version
	m := r.migrations[p.Name]
	for _, v := range vs {
		if v != at {
			var err error
			if data, err = m.Apply(data, at, v); err != nil {
				return err
			}
			at = v
		}
		if _, err := e.section(p.Name, v, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// limitedBuffer is a bytes.Buffer that refuses to grow beyond max bytes,
// for a Capture that is to be migrated before it is written.
type limitedBuffer struct {
	bytes.Buffer
	max int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if int64(b.Len())+int64(len(p)) > b.max {
		return 0, fmt.Errorf("%w: a section to migrate holds more than %d bytes (Options.MaxSize)", ErrTooLarge, b.max)
	}
	return b.Buffer.Write(p)
}

// Info describes a snapshot that was read.
type Info struct {
	Format   uint16    // snapshot format version
	Producer Build     // the binary that wrote it
	Sections []Section // every section in the snapshot, in order
	// Skipped lists sections that no participant registered, skipped by
	// IgnoreUnknown after their checksums were verified.
	Skipped []string
	// Missing lists registered participants with no section in the
	// snapshot. They were not restored and keep their initial state;
	// that is not an error, since a new release may add participants.
	Missing []string
	// Bytes is the length of the snapshot.
	Bytes int64
}

// ReadSnapshot reads a snapshot from r and restores each participant from
// its section, in the order of the snapshot. It reads exactly the
// snapshot's bytes from r and nothing more.
//
// A section at the participant's Version streams straight into Restore:
// memory use does not grow with its size, and every byte Restore reads has
// passed its chunk checksum; a damaged or truncated section makes Restore's
// reader return an error wrapping ErrCorrupt, never io.EOF. A section at an
// older version is read whole into memory (at most MaxSize), verified,
// migrated and then given to Restore.
//
// A restore is all or nothing. On error every Restore already called, the
// failing one included, is undone (Participant.Reset), so the participants
// hold what they held before ReadSnapshot; if an undo fails, the error also
// wraps ErrPartialRestore and the process must not serve. Info describes
// what was read up to the error.
func (r *Registry) ReadSnapshot(rd io.Reader) (Info, error) {
	return r.readSnapshot(context.Background(), rd, readRestore)
}

// Verify reads a snapshot from rd like ReadSnapshot but restores nothing:
// it checks the framing, every checksum, the limits, and that every
// section is known (or skipped by policy) and at a version this registry
// reads. A registry with no participants and IgnoreUnknown inspects any
// snapshot.
func (r *Registry) Verify(rd io.Reader) (Info, error) {
	return r.readSnapshot(context.Background(), rd, readVerify)
}

// readMode says what readSnapshot does with the sections it reads.
type readMode int

const (
	readVerify  readMode = iota // verify, restore nothing
	readRestore                 // Restore, or RestoreDelta on top of a first round
	readPreCopy                 // a first round (PreCopy.Restore), or a middle one
	readMiddle                  // a middle round, once its header says so: PreCopy.RestoreDelta
)

func (r *Registry) readSnapshot(ctx context.Context, rd io.Reader, mode readMode) (Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := newDecoder(ctx, rd, r.opts.MaxSize)
	defer d.release()
	var info Info
	var err error
	info.Producer, err = d.header()
	if err != nil {
		info.Bytes = d.off
		if mode == readRestore || mode == readPreCopy && r.preRestored != nil {
			// A round after the first that does not even start
			// undoes the rounds before: the restore is all or
			// nothing across them.
			err = r.preUndoLocked(err)
		}
		return info, err
	}
	if mode == readPreCopy && d.flags == flagPreCopy|flagDeltas {
		mode = readMiddle
	}
	info.Format = FormatVersion
	var rd1 round
	switch mode {
	case readRestore:
		// The restores of a first round, if one was read, are undone
		// with this round's: the second round completes the first.
		rd1 = round{undo: r.preUndo, restored: r.preRestored}
		r.preUndo, r.preRestored = nil, nil
		if d.flags&flagPreCopy != 0 {
			info.Bytes = d.off
			return info, rd1.undo.run(r.opts.Logger, d.fail(fmt.Errorf("%w: the snapshot is the first or a middle round of a pre-copy handoff (ReadPreCopy reads it)", ErrPreCopy)))
		}
	case readMiddle:
		// The rounds before are undone with this one if it fails, and
		// kept, to complete, if it does not.
		if r.preRestored == nil {
			info.Bytes = d.off
			return info, d.fail(fmt.Errorf("%w: a middle round of a pre-copy handoff, and no first round was restored", ErrPreCopy))
		}
		rd1 = round{undo: r.preUndo, restored: r.preRestored}
		r.preUndo, r.preRestored = nil, nil
	case readPreCopy:
		if d.flags&flagPreCopy == 0 {
			info.Bytes = d.off
			return info, r.preUndoLocked(d.fail(fmt.Errorf("%w: the snapshot is not the first or a middle round of a pre-copy handoff", ErrPreCopy)))
		}
		if r.preRestored != nil {
			info.Bytes = d.off
			return info, r.preUndoLocked(d.fail(fmt.Errorf("%w: a first round is restored already; its middle or last rounds or DiscardPreCopy come next", ErrPreCopy)))
		}
		rd1.restored = make(map[int]bool)
	}
	undo := &rd1.undo
	// Any failure past this point undoes the restores made so far.
	fail := func(err error) (Info, error) {
		info.Bytes = d.off
		return info, undo.run(r.opts.Logger, err)
	}
	order := sectionOrder{alternates: d.flags&flagAlternates != 0, seen: make(map[string]bool, len(r.parts))}
	for {
		h, end, err := d.next()
		if err != nil {
			return fail(err)
		}
		if end {
			break
		}
		if err := order.next(h); err != nil {
			return fail(d.fail(err))
		}
		info.Sections = append(info.Sections, Section{Name: h.name, Version: h.version, Delta: h.delta})
		s := d.section(h.name)
		if order.settled {
			err = s.discard()
		} else {
			order.settled, order.pending, err = r.readSection(&info, h, s, mode, &rd1, order.alternates)
		}
		info.Sections[len(info.Sections)-1].Bytes = s.n
		if err != nil {
			return fail(err)
		}
	}
	if order.pending != nil {
		return fail(d.fail(order.pending))
	}
	if mode == readRestore || mode == readMiddle {
		for i := range rd1.restored {
			if name := r.parts[i].Name; !order.seen[name] {
				return fail(d.fail(fmt.Errorf("%w: section %q was restored by the first round and is missing from a later one", ErrPreCopy, name)))
			}
		}
	}
	info.Bytes = d.off
	for _, p := range r.parts {
		if !order.seen[p.Name] {
			info.Missing = append(info.Missing, p.Name)
		}
	}
	if mode == readPreCopy || mode == readMiddle {
		r.preUndo, r.preRestored = rd1.undo, rd1.restored
	}
	return info, nil
}

// A round is what one read restored: the undo of its restores and, for a
// pre-copy handoff, the positions of the participants that its first round
// restored.
type round struct {
	undo     undoLog
	restored map[int]bool
}

// preUndoLocked undoes the restores of a first round (and its middle
// rounds) whose next round failed with cause, and returns cause (joined as undoLog.run joins).
func (r *Registry) preUndoLocked(cause error) error {
	undo := r.preUndo
	r.preUndo, r.preRestored = nil, nil
	return undo.run(r.opts.Logger, cause)
}

// sectionOrder checks the order of a snapshot's sections: each name once,
// or, in a snapshot with alternates, the same name again right after it at
// each lower version.
type sectionOrder struct {
	alternates bool
	seen       map[string]bool
	prev       sectionHeader // the section before this one
	settled    bool          // prev's name was restored, verified or skipped: its alternates are not needed
	pending    error         // why none of prev's name could be read so far
}

// next checks h against the sections before it: a name seen before is a
// duplicate, and a new name ends the previous one, whose pending reason (no
// version of it could be read) is then the error.
func (o *sectionOrder) next(h sectionHeader) error {
	if h.name == o.prev.name {
		if !o.alternates || h.version >= o.prev.version {
			return fmt.Errorf("%w: %q appears twice", ErrDuplicateSection, h.name)
		}
	} else {
		if o.pending != nil {
			return o.pending
		}
		if o.seen[h.name] {
			return fmt.Errorf("%w: %q appears twice", ErrDuplicateSection, h.name)
		}
		o.seen[h.name] = true
		o.settled = false
	}
	o.prev = h
	return nil
}

// readSection reads one section to its end, restoring it if restore is set.
// It reports whether the section settled its name (restored, verified or
// skipped). A version this registry cannot read is an error, unless the
// snapshot has alternates: then the section is verified and skipped, and
// the error is returned as pending, for the case that no alternate of it
// is readable either.
func (r *Registry) readSection(info *Info, h sectionHeader, s *sectionReader, mode readMode, rd *round, alternates bool) (settled bool, pending, err error) {
	d := s.d
	undo := &rd.undo
	i, ok := r.index[h.name]
	if !ok {
		if r.opts.UnknownSections != IgnoreUnknown {
			return false, nil, d.fail(fmt.Errorf("%w: %q (version %d) has no participant here; set Options.UnknownSections to IgnoreUnknown to drop it", ErrUnknownSection, h.name, h.version))
		}
		info.Skipped = append(info.Skipped, h.name)
		return true, nil, s.discard()
	}
	p := r.parts[i]
	if mode == readPreCopy || mode == readMiddle || h.delta {
		return true, nil, r.readRound(h, s, mode, p, i, rd)
	}
	if mode == readRestore && rd.restored[i] {
		return false, nil, d.fail(fmt.Errorf("%w: section %q was restored by the first round and comes whole in the second, not as a delta", ErrPreCopy, h.name))
	}
	if h.version != p.Version {
		m := r.migrations[h.name]
		if m == nil || !m.CanRead(h.version, p.Version) {
			var reads []uint32
			if m != nil {
				reads = m.Reads(p.Version)
			} else {
				reads = []uint32{p.Version}
			}
			verr := fmt.Errorf("%w: section %q is at version %d, this binary restores versions %v", ErrUnknownVersion, h.name, h.version, reads)
			if alternates {
				return false, verr, s.discard()
			}
			return false, nil, d.fail(verr)
		}
		if mode == readVerify {
			return true, nil, s.discard()
		}
		// Migrations work on whole byte slices: buffer the section,
		// which the decoder's MaxSize bounds, and restore only once it
		// has been verified to the end.
		var buf bytes.Buffer
		if _, err := s.WriteTo(&buf); err != nil {
			return false, nil, err
		}
		data, err := m.Apply(buf.Bytes(), h.version, p.Version)
		if err != nil {
			return false, nil, d.fail(fmt.Errorf("section %q: %w", h.name, err))
		}
		if err := undo.record(r.opts.Logger, p); err != nil {
			return false, nil, d.fail(err)
		}
		if err := r.restore(p, bytes.NewReader(data)); err != nil {
			return false, nil, d.fail(fmt.Errorf("restore %q (migrated from version %d to %d): %w", h.name, h.version, p.Version, err))
		}
		return true, nil, nil
	}
	if mode == readVerify {
		return true, nil, s.discard()
	}
	if err := undo.record(r.opts.Logger, p); err != nil {
		return false, nil, d.fail(err)
	}
	return true, nil, r.stream(s, p.Name, "restore", func() error { return r.restore(p, s) })
}

// readRound reads a section of either round of a pre-copy handoff: in a
// first round, what PreCopy.Capture wrote, for PreCopy.Restore; in a second,
// a delta, for PreCopy.RestoreDelta on top of the first round. Neither is
// migrated: a first round holds only sections the reader takes as they are.
func (r *Registry) readRound(h sectionHeader, s *sectionReader, mode readMode, p Participant, i int, rd *round) error {
	d := s.d
	what := "a first round"
	if h.delta {
		what = "a delta"
	}
	switch {
	case p.PreCopy == nil:
		return d.fail(fmt.Errorf("%w: section %q comes as %s, and its participant here has no PreCopy", ErrPreCopy, h.name, what))
	case h.version != p.Version:
		return d.fail(fmt.Errorf("%w: section %q comes as %s at version %d, this binary restores version %d (a pre-copy is never migrated)", ErrPreCopy, h.name, what, h.version, p.Version))
	case mode == readMiddle && !h.delta:
		return d.fail(fmt.Errorf("%w: section %q comes whole in a middle round, which holds only deltas", ErrPreCopy, h.name))
	case mode == readVerify:
		return s.discard()
	case h.delta && !rd.restored[i]:
		return d.fail(fmt.Errorf("%w: a delta for section %q, which no first round restored", ErrPreCopy, h.name))
	case h.delta:
		return r.stream(s, p.Name, "restore the delta of", func() error {
			return call(r.opts.Logger, p.Name, "PreCopy.RestoreDelta", func() error { return p.PreCopy.RestoreDelta(s) })
		})
	}
	if err := rd.undo.record(r.opts.Logger, p); err != nil {
		return d.fail(err)
	}
	rd.restored[i] = true
	return r.stream(s, p.Name, "restore the first round of", func() error {
		return call(r.opts.Logger, p.Name, "PreCopy.Restore", func() error { return p.PreCopy.Restore(s) })
	})
}

// stream runs restore, which reads section s of participant name, and then
// verifies the rest of s: a Restore may stop before the end (a decoder that
// knows its own length). A damaged section is reported as the cause of the
// failure of restore, which it most likely is.
func (r *Registry) stream(s *sectionReader, name, what string, restore func() error) error {
	d := s.d
	rerr := restore()
	if d.err != nil {
		return d.err
	}
	if rerr != nil {
		return d.fail(fmt.Errorf("%s %q: %w", what, name, rerr))
	}
	return s.discard()
}

// restore calls p's Restore, recovering a panic.
func (r *Registry) restore(p Participant, rd io.Reader) error {
	return call(r.opts.Logger, p.Name, "Restore", func() error { return p.Restore(rd) })
}

// An undoLog is what it takes to undo the Restores of one ReadSnapshot, in
// the order they were called.
type undoLog []undoStep

type undoStep struct {
	p    Participant
	prev []byte // the state captured before Restore; unused with p.Reset
}

// record prepares the undo of p's coming Restore: nothing if p has a
// Reset, else a capture of its current state. If the capture fails, p is
// not to be restored, since it could not be put back.
func (u *undoLog) record(log *slog.Logger, p Participant) error {
	step := undoStep{p: p}
	if p.Reset == nil {
		var buf bytes.Buffer
		err := call(log, p.Name, "Capture", func() error { return p.Capture(&buf) })
		if err != nil {
			return fmt.Errorf("keep %q's state to undo its restore: %w", p.Name, err)
		}
		step.prev = buf.Bytes()
	}
	*u = append(*u, step)
	return nil
}

// run undoes every recorded Restore, last first, after cause ended the
// restore. It returns cause, joined with ErrPartialRestore and what went
// wrong if a participant could not be put back.
func (u undoLog) run(log *slog.Logger, cause error) error {
	var errs []error
	var left []string
	for i := len(u) - 1; i >= 0; i-- {
		p := u[i].p
		var err error
		if p.Reset != nil {
			err = call(log, p.Name, "Reset", func() error { p.Reset(); return nil })
		} else {
			prev := u[i].prev
			err = call(log, p.Name, "Restore", func() error { return p.Restore(bytes.NewReader(prev)) })
		}
		if err != nil {
			left = append(left, p.Name)
			errs = append(errs, fmt.Errorf("undo the restore of %q: %w", p.Name, err))
		}
	}
	if len(errs) == 0 {
		return cause
	}
	return errors.Join(cause, fmt.Errorf("%w: %q keep restored state", ErrPartialRestore, left), errors.Join(errs...))
}
