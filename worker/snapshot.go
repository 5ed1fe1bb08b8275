package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"

	"github.com/batonhq/baton/state"
)

// Snapshot format, version 2 (SnapshotVersion), or 3 when a record has
// pending runs: Capture writes 3 only then, so that a release that reads
// version 2, the participant's version, restores every other snapshot
// (and refuses, with an error, one it would misread). Restore reads 1 to
// 3; version 1 has neither last_run nor spec in its records.
//
// All integers are unsigned varints (encoding/binary Uvarint) unless marked
// "signed" (Varint, zig-zag). Times are wall-clock Unix nanoseconds (signed),
// 0 meaning none: the monotonic clock does not cross processes. A byte
// string is a uvarint length followed by that many bytes.
//
//	snapshot = magic chunk* end
//	magic    = "BWK" version (0x03; 0x02, 0x01 for versions 2, 1)
//	chunk    = len (uvarint, 1..maxChunk) payload crc (4 bytes, little endian,
//	           CRC-32C of payload)
//	end      = 0x00 (a chunk length of zero)
//
// The first chunk's payload is the header:
//
//	captured       signed  when Capture ran
//	last_finish    signed  when the last counted run finished
//	runs, failures, panics, skipped, cut_off   supervisor totals
//	count                  number of task records that follow
//
// Every later chunk holds whole task records, back to back:
//
//	id            bytes
//	kind          bytes
//	flags                 1 loop, 2 done, 4 in flight (run again), 8 backoff,
//	                      16 the next run repeats one that was cut off after
//	                      it started (a possible duplicate), 32 data: a
//	                      task of a registered kind, restored from spec,
//	                      64 paused, 128 pending runs follow (version 3);
//	                      readers ignore flags they do not know
//	orphan_gen            0, or how many Restores kept it without registration
//	every         signed  interval in ns (0 for a loop), for reporting
//	nominal       signed  schedule point the next run serves
//	due           signed  when the next run may start
//	runs, failures, consecutive_failures
//	last_error    bytes
//	state_version
//	state         bytes
//	last_run      signed  when its last counted run finished (version 2)
//	spec          bytes   a data task's schedule and options: fields of
//	                      tag, length, value, the unknown ones skipped (see
//	                      encodeSpec); empty for a task registered by ID
//	                      (version 2)
//	pending               with flag 128 (version 3): a count (1 to
//	                      MaxConcurrentLimit), then that many sequence
//	                      numbers, ascending, each as seq<<1 | dup: runs of
//	                      an OverlapAllow task that were in flight or cut
//	                      off, to run again under their numbers; dup says
//	                      the run had started (Run.MaybeDuplicate). A
//	                      pending number is distinct and at most runs +
//	                      count; the task's next new number is runs +
//	                      count + 1.
//
// The format is self-delimiting, so Restore reads exactly the bytes that
// Capture wrote and nothing after them, and every payload is checked before
// it is parsed.
//
// Pre-copy (state.PreCopy, precopy.go) writes two streams of its own, in
// the same chunks, each versioned by its magic:
//
//	base   = "BWB" 0x01 header chunk* end   the first round, while running
//	delta  = "BWD" 0x01 header chunk* end   after Freeze
//
// Their header is the snapshot's without count (captured, last_finish,
// the five totals); a delta's adds removed and records, the numbers of
// removed IDs and of records that follow. Every later chunk's payload is
//
//	kind   1 byte: 'T' task records, 'R' removed IDs (delta only)
//	count  uvarint, 1 or more: the items that follow, back to back
//	items  records as above, in format 3 (pending runs with flag 128),
//	       or IDs as byte strings
//
// The base holds every task and orphan as it was when its slice was
// written, but those changed by then: the delta has them. The delta
// holds the records of every task changed since the base began (run,
// checkpointed, paused, resumed, added, ...) and the IDs of the tasks and
// orphans removed meanwhile; its totals and last_finish replace the
// base's. A reader rejects an unknown kind, and counts that do not match.

var snapshotMagic = [4]byte{'B', 'W', 'K', SnapshotVersion}

// formatPending is the format version of a snapshot with pending runs, the
// newest Restore reads.
const formatPending = 3

// maxSpecSize bounds a record's spec on read: the largest Args in base64,
// and the rest.
const maxSpecSize = 2*MaxArgsSize + 4096

const (
	// chunkTarget is the payload size at which Capture starts a new chunk.
	chunkTarget = 64 << 10
	// maxChunk bounds a chunk on read: one record with the largest state.
	maxChunk = MaxStateSize + 2*MaxIDLength + MaxKindLength + maxErrorLength + maxSpecSize + 256
)

const (
	flagLoop = 1 << iota
	flagDone
	flagInFlight
	flagBackoff
	flagMaybeDup
	flagData
	flagPaused
	flagPending
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one task in a snapshot, with wall-clock times. readSnapshot
// sets idb, pointing into the chunk; Restore sets id, sharing the string of
// the registered task when there is one, so that restoring 100k tasks does
// not allocate 100k ID strings.
type record struct {
	id                          string
	idb                         []byte
	kind                        string
	flags                       uint64
	orphanGen                   uint64
	every                       int64
	nominal, due                int64
	runs, failures, consecutive uint64
	lastErr                     string
	version                     uint32
	state                       []byte
	lastRun                     int64
	spec                        []byte
	// pending are the runs to run again, as seq<<1 | dup (version 3).
	pending []uint64
	// reason says why an orphan is not run, when it is not the plain
	// absence of its kind or registration; not written.
	reason string
}

// snapshot is a snapshot read and checked chunk by chunk, its records not
// yet parsed: Restore parses them in place, twice (to plan, then to
// apply), rather than building a record per task, which at a million tasks
// cost more memory than the tasks themselves.
type snapshot struct {
	captured, lastFinish int64
	totals               totals
	version              byte
	count                uint64   // records announced by the header
	chunks               [][]byte // the record chunks' payloads, checksums verified
}

// recordIter parses the records of a snapshot in order, into one record
// that each call to next overwrites.
type recordIter struct {
	snap  *snapshot
	chunk int // index of the chunk being parsed
	d     decoder
	i     int // records parsed
	kinds map[string]string
	rec   record
	err   error
}

func (snap *snapshot) iter() *recordIter {
	it := &recordIter{snap: snap, chunk: -1, kinds: make(map[string]string)}
	return it
}

// next parses the next record into it.rec and reports whether there was
// one; at the end it.err says whether the records were what the header
// announced, wrapping ErrCorrupt if not.
func (it *recordIter) next() bool {
	if it.err != nil {
		return false
	}
	for len(it.d.b) == 0 {
		if it.chunk+1 == len(it.snap.chunks) {
			if uint64(it.i) != it.snap.count {
				it.err = fmt.Errorf("%w: %d records, header announced %d", ErrCorrupt, it.i, it.snap.count)
			}
			return false
		}
		it.chunk++
		it.d = decoder{b: it.snap.chunks[it.chunk]}
	}
	if uint64(it.i) == it.snap.count {
		it.err = fmt.Errorf("%w: more than the %d records announced", ErrCorrupt, it.snap.count)
		return false
	}
	it.rec = it.d.record(it.kinds, it.snap.version)
	if it.d.err != nil {
		it.err = fmt.Errorf("%w: record %d: %w", ErrCorrupt, it.i, it.d.err)
		return false
	}
	it.i++
	return true
}

// records parses every record of snap, for the tests and the fuzzer.
func (snap *snapshot) records() ([]record, error) {
	var out []record
	for it := snap.iter(); ; {
		if !it.next() {
			return out, it.err
		}
		out = append(out, it.rec)
	}
}

// captureLocked writes the snapshot to w.
func (s *Supervisor) captureLocked(w io.Writer) error {
	now := s.opts.now()
	nowMono, nowWall := s.mono(now), now.UnixNano()
	wall := func(mono int64) int64 { return nowWall + (mono - nowMono) }

	cw := chunkWriter{w: w, buf: make([]byte, 0, chunkTarget+4096)}
	magic := snapshotMagic
	if s.hasPendingLocked() {
		magic[3] = formatPending
	}
	if _, err := w.Write(magic[:]); err != nil {
		return fmt.Errorf("worker: capture: %w", err)
	}
	b := appendHeader(cw.buf, nowWall, s.lastFinish, s.totals)
	b = binary.AppendUvarint(b, uint64(len(s.all)+len(s.orphans)))
	cw.buf = b
	cw.flush()

	for _, t := range s.all {
		r := recordOf(t, wall)
		cw.buf = appendRecord(cw.buf, &r)
		if len(cw.buf) >= chunkTarget {
			cw.flush()
		}
	}
	for _, r := range s.orphans {
		cw.buf = appendRecord(cw.buf, r)
		if len(cw.buf) >= chunkTarget {
			cw.flush()
		}
	}
	cw.flush()
	if cw.err == nil {
		_, cw.err = w.Write([]byte{0})
	}
	if cw.err != nil {
		return fmt.Errorf("worker: capture: %w", cw.err)
	}
	return nil
}

// appendHeader appends the figures that open a snapshot's header (and a
// pre-copy base's or delta's).
func appendHeader(b []byte, captured, lastFinish int64, tt totals) []byte {
	b = binary.AppendVarint(b, captured)
	b = binary.AppendVarint(b, lastFinish)
	for _, v := range []uint64{tt.runs, tt.failures, tt.panics, tt.skipped, tt.cutOff} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// readHeader parses what appendHeader wrote into snap.
func readHeader(d *decoder, snap *snapshot) {
	snap.captured, snap.lastFinish = d.varint(), d.varint()
	snap.totals = totals{d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()}
}

// recordOf returns t's snapshot record; wall turns a time on the
// supervisor's monotonic clock into wall-clock nanoseconds.
func recordOf(t *task, wall func(int64) int64) record {
	r := record{
		id:          t.id,
		kind:        t.spec.Kind,
		every:       int64(t.spec.Every),
		nominal:     wall(t.nominal),
		due:         wall(t.due),
		runs:        t.runs,
		failures:    t.c().failures,
		consecutive: t.c().consecutive,
		lastErr:     t.c().lastErr,
		version:     t.spec.Version,
		state:       t.state(),
		lastRun:     t.lastRun,
	}
	if t.data {
		r.flags |= flagData
		r.spec = t.c().specBytes
	}
	if t.paused {
		r.flags |= flagPaused
	}
	if t.loop() {
		r.flags |= flagLoop
	}
	switch t.status {
	case StatusDone:
		r.flags |= flagDone
	case StatusRunning:
		r.flags |= flagInFlight
	case StatusBackoff:
		r.flags |= flagBackoff
	}
	if t.maybeDup {
		r.flags |= flagMaybeDup
	}
	if r.pending = t.pendingSeqs(); r.pending != nil {
		r.flags |= flagPending
		r.flags &^= flagInFlight // its runs are listed: the schedule is not in flight
	}
	return r
}

func appendRecord(b []byte, r *record) []byte {
	b = appendString(b, r.id)
	b = appendString(b, r.kind)
	b = binary.AppendUvarint(b, r.flags)
	b = binary.AppendUvarint(b, r.orphanGen)
	b = binary.AppendVarint(b, r.every)
	b = binary.AppendVarint(b, r.nominal)
	b = binary.AppendVarint(b, r.due)
	b = binary.AppendUvarint(b, r.runs)
	b = binary.AppendUvarint(b, r.failures)
	b = binary.AppendUvarint(b, r.consecutive)
	b = appendString(b, r.lastErr)
	b = binary.AppendUvarint(b, uint64(r.version))
	b = binary.AppendUvarint(b, uint64(len(r.state)))
	b = append(b, r.state...)
	b = binary.AppendVarint(b, r.lastRun)
	b = binary.AppendUvarint(b, uint64(len(r.spec)))
	b = append(b, r.spec...)
	if r.flags&flagPending != 0 {
		b = binary.AppendUvarint(b, uint64(len(r.pending)))
		for _, v := range r.pending {
			b = binary.AppendUvarint(b, v)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// chunkWriter frames payloads as chunks; the first error sticks.
type chunkWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (c *chunkWriter) flush() {
	if c.err != nil || len(c.buf) == 0 {
		c.buf = c.buf[:0]
		return
	}
	var frame [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(frame[:], uint64(len(c.buf)))
	c.buf = binary.LittleEndian.AppendUint32(c.buf, crc32.Checksum(c.buf, castagnoli))
	if _, err := c.w.Write(frame[:n]); err != nil {
		c.err = err
	} else if _, err := c.w.Write(c.buf); err != nil {
		c.err = err
	}
	c.buf = c.buf[:0]
}

// readSnapshot parses a snapshot from r, reading no byte past its end.
// Every failure wraps ErrCorrupt, or the reader's error.
func readSnapshot(r io.Reader) (*snapshot, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, corrupt("magic", err)
	}
	version := magic[3]
	if [3]byte(magic[:3]) != [3]byte(snapshotMagic[:3]) || version < 1 || version > formatPending {
		return nil, fmt.Errorf("%w: magic % x, want % x (or an earlier version)", ErrCorrupt, magic, snapshotMagic)
	}
	cr := chunkReader{r: r}
	payload, err := cr.next()
	if err != nil {
		return nil, err
	}
	if payload == nil {
		return nil, fmt.Errorf("%w: no header", ErrCorrupt)
	}
	d := decoder{b: payload}
	snap := &snapshot{}
	readHeader(&d, snap)
	count := d.uvarint()
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorrupt, d.err)
	}
	snap.version, snap.count = version, count
	for {
		payload, err := cr.next()
		if err != nil {
			return nil, err
		}
		if payload == nil {
			return snap, nil
		}
		snap.chunks = append(snap.chunks, payload)
	}
}

func corrupt(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated in %s", ErrCorrupt, what)
	}
	return fmt.Errorf("worker: read snapshot %s: %w", what, err)
}

// chunkReader reads chunks one at a time, reading the length byte by byte
// so that nothing past the end marker is consumed.
type chunkReader struct {
	r  io.Reader
	n  int
	b1 [1]byte
}

// next returns the next payload, checked, or nil at the end marker.
func (c *chunkReader) next() ([]byte, error) {
	c.n++
	var size uint64
	for shift := 0; ; shift += 7 {
		if shift > 63 {
			return nil, fmt.Errorf("%w: chunk %d: bad length", ErrCorrupt, c.n)
		}
		if _, err := io.ReadFull(c.r, c.b1[:]); err != nil {
			return nil, corrupt(fmt.Sprintf("chunk %d length", c.n), err)
		}
		size |= uint64(c.b1[0]&0x7f) << shift
		if c.b1[0] < 0x80 {
			break
		}
	}
	if size == 0 {
		return nil, nil
	}
	if size > maxChunk {
		return nil, fmt.Errorf("%w: chunk %d: %d bytes, limit %d", ErrCorrupt, c.n, size, maxChunk)
	}
	buf, err := readN(c.r, int(size)+4)
	if err != nil {
		return nil, corrupt(fmt.Sprintf("chunk %d", c.n), err)
	}
	payload, sum := buf[:size], binary.LittleEndian.Uint32(buf[size:])
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, fmt.Errorf("%w: chunk %d: checksum mismatch", ErrCorrupt, c.n)
	}
	return payload, nil
}

// readN reads exactly n bytes. Large sizes come from a length that may be
// damaged, so the buffer grows with the bytes actually read instead of
// being allocated up front.
func readN(r io.Reader, n int) ([]byte, error) {
	if n <= 1<<20 {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	var bb bytes.Buffer
	m, err := bb.ReadFrom(io.LimitReader(r, int64(n)))
	if err == nil && m < int64(n) {
		err = io.ErrUnexpectedEOF
	}
	return bb.Bytes(), err
}

// decoder parses a payload; the first error sticks and later reads return
// zero values.
type decoder struct {
	b   []byte
	err error
	// kind is the last record's kind, when kindSet.
	kind    string
	kindSet bool
}

var errShort = errors.New("truncated")

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("length %d out of range", n)
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) record(kinds map[string]string, version byte) record {
	var r record
	r.idb = d.bytes(MaxIDLength)
	kind := d.bytes(MaxKindLength)
	if d.kindSet && d.kind == string(kind) {
		r.kind = d.kind // tasks of a kind come in runs: skip the lookup
	} else if k, ok := kinds[string(kind)]; ok {
		r.kind = k
	} else if d.err == nil {
		r.kind = string(kind)
		kinds[r.kind] = r.kind
	}
	d.kind, d.kindSet = r.kind, d.err == nil
	r.flags = d.uvarint()
	r.orphanGen = d.uvarint()
	r.every = d.varint()
	r.nominal = d.varint()
	r.due = d.varint()
	r.runs = d.uvarint()
	r.failures = d.uvarint()
	r.consecutive = d.uvarint()
	if e := d.bytes(maxErrorLength); len(e) > 0 {
		r.lastErr = string(e)
	}
	v := d.uvarint()
	if v > math.MaxUint32 && d.err == nil {
		d.err = fmt.Errorf("state version %d out of range", v)
	}
	r.version = uint32(v)
	if st := d.bytes(MaxStateSize); len(st) > 0 {
		// st points into the chunk's buffer, which is never reused: the
		// state may keep it, sparing an allocation per task. (A chunk
		// stays in memory while one of its tasks keeps that state.)
		r.state = st
	}
	if version >= 2 {
		r.lastRun = d.varint()
		if sp := d.bytes(maxSpecSize); len(sp) > 0 {
			r.spec = sp
		}
	}
	if version >= 3 && r.flags&flagPending != 0 {
		r.pending = d.pending(r.runs)
	}
	if d.err == nil && len(r.idb) == 0 {
		d.err = errors.New("empty task id")
	}
	return r
}

// pending reads a record's pending runs, checking that their numbers are
// ascending, distinct and at most runs + count, as Capture writes them.
func (d *decoder) pending(runs uint64) []uint64 {
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxConcurrentLimit) {
		d.err = fmt.Errorf("%d pending runs, want 1 to %d", n, MaxConcurrentLimit)
	}
	if d.err != nil {
		return nil
	}
	out := make([]uint64, 0, n)
	for range n {
		v := d.uvarint()
		seq := v >> 1
		switch {
		case d.err != nil:
			return nil
		case seq == 0 || seq > runs+n || runs+n < runs:
			d.err = fmt.Errorf("pending run %d out of range (runs %d)", seq, runs)
			return nil
		case len(out) > 0 && seq <= out[len(out)-1]>>1:
			d.err = fmt.Errorf("pending run %d not ascending", seq)
			return nil
		}
		out = append(out, v)
	}
	return out
}

// Restore loads a snapshot written by Capture, in this process or the one
// before it. Call it after registering the tasks and before Run; it returns
// ErrRunning otherwise.
//
// Each registered task found in the snapshot takes back its progress: run
// count, failures and backoff, last error, checkpointed state (migrated to
// the task's Version through its Migrations) and its schedule, so it runs
// next at the wall-clock time it would have in the old process, but never
// later than one interval from now (MaxBackoff for a task in backoff): a
// wall clock set back between the processes does not delay the tasks, and
// the clamp is logged. A run that was in flight when the snapshot was taken
// runs at once, and a run that was cut off after it started is logged and
// marked as a possible duplicate (TaskInfo.MaybeDuplicate). Registered tasks
// absent from the snapshot keep the fresh schedule Add gave them. A task in
// the snapshot with no registration is logged, counted in the
// orphaned-tasks metric and kept for one generation: the next Capture
// writes it again, and Add adopts it; a Restore that finds it orphaned a
// second time drops it, with a log line.
//
// A data task (one added without Run, of a registered Kind) that no task
// registered by ID claims is recreated from the snapshot, schedule,
// options, pause and progress included, when its kind is registered; when
// it is not, or its schedule does not hold here (a time zone this system
// lacks), it is kept as an orphan for as long as it takes (Orphans): never
// run, written again by Capture, adopted when its kind is registered.
//
// Restore is all or nothing: on error no task is changed. For a task with
// state, an unreadable state version fails with ErrStateVersion (and
// state.ErrUnknownVersion), a changed Kind with ErrKindChanged, bytes its
// typed value cannot decode with ErrBadState; damaged snapshot bytes fail
// with ErrCorrupt. The error names the task and the versions.
//
// The supervisor's totals (runs, failures, ...) continue from the
// snapshot's, and Handoff reports the work pause.
func (s *Supervisor) Restore(r io.Reader) error {
	check := func() error {
		if err := s.restorableLocked(); err != nil {
			return err
		}
		if s.pcr != nil {
			return errAwaitingDelta("Restore") // Reset, then Restore
		}
		s.undo = nil // a failed Restore changes nothing: Reset has nothing to undo
		return nil
	}
	read := func() (*snapshot, error) { return readSnapshot(r) }
	return restoreFrom(s, check, read, func(snap *snapshot) error {
		plan, err := s.planRestoreLocked(snap)
		if err == nil {
			s.undo = s.newUndoLocked(&plan)
			s.applyRestoreLocked(snap, &plan)
			s.logRestore(snap, plan)
		}
		return err
	})
}

// restoreFrom is the frame of every restore: check with the lock held,
// read without it, check again and apply what was read with it held.
// Checking before reading leaves the stream of a misplaced call alone;
// checking after catches a Run started meanwhile.
func restoreFrom[T any](s *Supervisor, check func() error, read func() (T, error), apply func(T) error) error {
	s.mu.Lock()
	err := check()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	v, err := read()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := check(); err != nil {
		return err
	}
	return apply(v)
}

// restorePlan is what a snapshot does to the registered tasks: the
// registered task each record matches, and the records kept or dropped for
// want of a registration.
type restorePlan struct {
	// matched holds, for each record in snapshot order, the registered
	// task it restores, or the data task it creates, or nil. special
	// holds the matches whose state was migrated or decoded, by record
	// index, ascending; the others take the record's state as it is, so
	// that a plain restore keeps nothing per task but the pointer.
	matched   []*task
	unmatched int
	special   []preparedAt
	// stateBytes is, per chunk, the state bytes its matched records
	// take as they are: applyRestoreLocked copies them out of the chunk,
	// so that the chunk is not kept alive by a few bytes of each task.
	stateBytes []int
	orphans    map[string]*record
	dropped    []string
	dups       []*task // matched tasks whose next run may be a duplicate
	// creates are the data tasks built from their spec, in snapshot
	// order; matched holds them too, at their records. The plan puts
	// them in all already, from position base on, and in byID (so that
	// a second record of the same ID is found, and apply has nothing
	// to index), and takes them out again if it fails; apply gives them
	// their progress and counts them.
	creates []*task
	base    int
	// spec is the data task spec parsed last.
	spec specCache
	// none: no task was registered; only created ones are in byID.
	none bool
	// clamped counts the due times clamped to their bound, maxOver is
	// the largest distance past it.
	clamped int
	maxOver time.Duration
}

// preparedAt is the prepared state of record i.
type preparedAt struct {
	i     int
	state []byte
	local any
}

// matches counts the records that restore a registered task.
func (p *restorePlan) matches() int { return len(p.matched) - p.unmatched - len(p.creates) }

// created reports whether t, in all, is a data task the plan created.
func (p *restorePlan) created(t *task) bool { return int(t.idx) >= p.base }

// errTwice is the error of a snapshot that has task id twice.
func errTwice(id string) error {
	return fmt.Errorf("%w: task %q is in the snapshot twice", ErrCorrupt, id)
}

// planRestoreLocked matches the snapshot's records to the registered tasks
// and prepares their state, changing nothing (but the data tasks it
// creates, in all and byID, taken out again on error), so that Restore is
// all or nothing. It is the first of the two passes over the records, and
// the one that finds damaged ones.
func (s *Supervisor) planRestoreLocked(snap *snapshot) (restorePlan, error) {
	plan := restorePlan{
		matched:    make([]*task, 0, min(snap.count, 1<<22)),
		stateBytes: make([]int, len(snap.chunks)),
		orphans:    make(map[string]*record),
		base:       len(s.all),
	}
	if err := s.planRecordsLocked(snap, &plan); err != nil {
		s.unplanCreatesLocked(&plan)
		return restorePlan{}, err
	}
	return plan, nil
}

// unplanCreatesLocked takes the data tasks that a failed plan created out
// of byID and all again.
func (s *Supervisor) unplanCreatesLocked(plan *restorePlan) {
	if plan.base == 0 {
		s.byID = taskIndex{} // they were all it held
	} else {
		for _, t := range slices.Backward(plan.creates) {
			s.byID.remove(s.all, t)
		}
	}
	clear(s.all[plan.base:])
	s.all = s.all[:plan.base]
}

// planRecordsLocked is planRestoreLocked's pass over the records, which
// leaves the data tasks it created in plan.creates when it fails.
func (s *Supervisor) planRecordsLocked(snap *snapshot, plan *restorePlan) error {
	// With no task registered, no record has one to look up: the lookup
	// of each ID (a cache miss in a large map) is spared, and a second
	// record of a created task's ID is found by its insert instead.
	plan.none = len(s.all) == 0
	it := snap.iter()
	for it.next() {
		rec := &it.rec
		var t *task
		if !plan.none {
			t = s.lookupLocked(it.i-1, rec.idb)
		}
		switch {
		case t != nil && plan.created(t):
			return errTwice(t.id)
		case t != nil:
			rec.id = t.id
		default:
			rec.id = string(rec.idb)
			var err error
			if t, err = s.planUnmatchedLocked(plan, rec, snap.count-uint64(it.i-1)); err != nil {
				return err
			}
			if t == nil {
				plan.matched = append(plan.matched, nil)
				plan.unmatched++
				continue
			}
		}
		p, err := prepare(t.spec, rec)
		if err != nil {
			return err
		}
		plan.matched = append(plan.matched, t)
		if p.local != nil || !sameBytes(p.state, rec.state) {
			plan.special = append(plan.special, preparedAt{i: it.i - 1, state: p.state, local: p.local})
		} else {
			plan.stateBytes[it.chunk] += len(rec.state)
		}
	}
	return it.err
}

// lookupLocked returns the registered task of ID id, the record at index
// i of the snapshot. The next binary mostly registers the tasks in the
// order the last one did, which is the order of the snapshot: the task
// registered i-th is tried first, which spares a hash lookup, and the
// cache misses of one in a large map, for almost every record.
func (s *Supervisor) lookupLocked(i int, id []byte) *task {
	if i < len(s.all) {
		if t := s.all[i]; t.id == string(id) {
			return t
		}
	}
	return s.byID.getBytes(s.all, id)
}

// sameBytes reports whether a and b are the same bytes in memory.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// planUnmatchedLocked plans the restore of a record that no registered
// task claims: a data task, created (returned) or kept as an orphan, or an
// orphan kept for one generation, or dropped after two. An orphan's record
// is copied: the plan keeps it. left is the number of records from this
// one to the end.
func (s *Supervisor) planUnmatchedLocked(plan *restorePlan, rec *record, left uint64) (*task, error) {
	if rec.flags&flagData != 0 {
		return s.planDataLocked(plan, rec, left)
	}
	if err := s.notCreatedLocked(plan, rec.id); err != nil {
		return nil, err
	}
	if rec.orphanGen >= 1 {
		plan.dropped = append(plan.dropped, rec.id)
		return nil, nil
	}
	kept := *rec
	kept.orphanGen++
	plan.orphans[kept.id] = &kept
	return nil, nil
}

// notCreatedLocked fails if the plan created a data task of ID id, for a
// record that no task claims: when tasks are registered, the lookup of
// the record's ID found it already.
func (s *Supervisor) notCreatedLocked(plan *restorePlan, id string) error {
	if plan.none && len(plan.creates) > 0 && s.byID.get(s.all, id) != nil {
		return errTwice(id)
	}
	return nil
}

// planDataLocked plans the restore of a data task that no task
// registered by ID claims: created from its spec if its kind is
// registered (returned, in all and byID), kept as an orphan otherwise,
// for as long as it takes, or when its spec does not hold here (a time
// zone this system lacks): a data task is never dropped. State its kind
// cannot read fails the restore, as for any task (the caller prepares
// it). A data task and an orphan of the same ID fail it with ErrCorrupt,
// in either order.
func (s *Supervisor) planDataLocked(plan *restorePlan, rec *record, left uint64) (*task, error) {
	t, err := s.taskOfRecordLocked(rec, &plan.spec)
	if err != nil || t == nil {
		if err := s.notCreatedLocked(plan, rec.id); err != nil {
			return nil, err
		}
		kept := *rec
		if err != nil {
			kept.reason = err.Error()
		}
		plan.orphans[kept.id] = &kept
		return nil, nil
	}
	if len(plan.orphans) > 0 {
		if _, dup := plan.orphans[rec.id]; dup {
			return nil, errTwice(rec.id)
		}
	}
	if len(plan.creates) == 0 {
		// Room for the records left at once, rather than by doubling.
		n := int(min(left, 1<<22))
		s.all = slices.Grow(s.all, n)
		s.byID.reserve(s.all, n)
	}
	t.idx = uint32(len(s.all))
	s.all = append(s.all, t)
	if s.byID.addNew(s.all, t) != nil { // the ID was there: plan.none
		s.all[t.idx] = nil
		s.all = s.all[:t.idx]
		return nil, errTwice(t.id)
	}
	plan.creates = append(plan.creates, t)
	return t, nil
}

// dataTaskLocked builds the task of data record rec, or returns nil for
// an orphan: its kind is not registered, or its spec does not hold here
// (rec.reason says why). State its kind cannot read is an error. c, if not
// nil, is the spec parsed last, shared by a run of records that differ
// only by ID.
func (s *Supervisor) dataTaskLocked(rec *record, c *specCache) (*task, prepared, error) {
	t, p, err := s.fromRecordLocked(rec, c)
	switch {
	case errors.Is(err, ErrStateVersion), errors.Is(err, ErrBadState), errors.Is(err, ErrStateTooLarge), errors.Is(err, ErrKindChanged):
		return nil, prepared{}, err
	case err != nil:
		rec.reason = err.Error()
		return nil, prepared{}, nil
	}
	return t, p, nil
}

// applyRestoreLocked gives the matched tasks their progress, parsing the
// records a second time (they were checked by the plan), rebuilds the
// queue and takes over the snapshot's totals.
func (s *Supervisor) applyRestoreLocked(snap *snapshot, plan *restorePlan) {
	now := s.opts.now()
	s.staleLocked("a Restore replaced the tasks")
	s.totals = snap.totals // before applyLocked, which counts what it skips
	special := plan.special
	var arena []byte // the chunk's states, copied out
	chunk := -1
	for it := snap.iter(); it.next(); {
		i := it.i - 1
		t := plan.matched[i]
		if t == nil {
			continue
		}
		rec := &it.rec
		rec.id = t.id
		p := prepared{rec: rec, state: rec.state}
		if len(special) > 0 && special[0].i == i {
			p.state, p.local = special[0].state, special[0].local
			special = special[1:]
		} else if len(rec.state) > 0 {
			if it.chunk != chunk {
				chunk = it.chunk
				arena = make([]byte, 0, plan.stateBytes[chunk])
			}
			n := len(arena)
			arena = append(arena, rec.state...)
			p.state = arena[n:len(arena):len(arena)]
		}
		if plan.created(t) {
			// In all already, not counted yet: counted as it is, for
			// applyMatchLocked to move.
			s.counts[t.status]++
		}
		s.applyMatchLocked(plan, t, p, now)
	}
	s.rebuildQueueLocked()
	s.orphans = plan.orphans
	s.prevLastFinish = snap.lastFinish
	s.restored = true
	s.awaitFirst.Store(true)
}

// rebuildQueueLocked queues every task anew. After a Restore most due
// times changed: rebuilding the queue, O(n), beats fixing it task by
// task. Before Run no task is running, so every task that is not done or
// held is queued.
func (s *Supervisor) rebuildQueueLocked() {
	s.q.reset()
	if cap(s.q.ents) < len(s.all) {
		s.q.ents = make([]qent, 0, len(s.all)) // once, rather than by doubling
	}
	nowMono := s.mono(s.opts.now())
	for _, t := range s.all {
		if t.status == StatusDone || t.status == StatusPaused || t.held {
			t.qseq = 0
			continue
		}
		due := t.due
		if ov := t.c().ov; ov != nil && len(ov.pending) > 0 {
			due = min(due, nowMono) // its cut-off runs, at once
		}
		s.q.add(t, due)
	}
	s.q.init()
}

// applyMatchLocked gives t, registered (or created by the plan), the
// progress in p, keeping the status counts and the plan's figures.
func (s *Supervisor) applyMatchLocked(plan *restorePlan, t *task, p prepared, now time.Time) {
	s.counts[t.status]--
	if over := s.applyRestoredLocked(t, p, now); over > 0 {
		plan.clamped++
		plan.maxOver = max(plan.maxOver, over)
	}
	s.counts[t.status]++
	if t.maybeDup {
		plan.dups = append(plan.dups, t)
	}
}

// logRestore reports a restore: one summary line, then up to ten lines
// each for the orphaned and the dropped tasks.
func (s *Supervisor) logRestore(snap *snapshot, plan restorePlan) {
	s.log.Info("worker: restored snapshot", "tasks", plan.matches(), "data_tasks", len(plan.creates), "orphaned", len(plan.orphans),
		"dropped", len(plan.dropped), "captured", time.Unix(0, snap.captured))
	if plan.clamped > 0 {
		s.log.Warn("worker: restored due times beyond one interval from now were clamped; the wall clock may have moved back",
			"tasks", plan.clamped, "most_beyond", plan.maxOver)
	}
	ids := make([]string, 0, len(plan.orphans))
	var data []string
	for id, rec := range plan.orphans {
		if rec.flags&flagData != 0 {
			data = append(data, id+" (kind "+rec.kind+")")
		} else {
			ids = append(ids, id)
		}
	}
	s.logIDs("worker: task in snapshot is not registered; its state is kept for one generation and adopted if it is added", ids)
	s.logIDs("worker: task in snapshot is of a kind this binary does not register; it is kept, listed by Orphans, never run, and adopted by a binary that registers its kind", data)
	s.logIDs("worker: task in snapshot was unregistered for two generations; its state is dropped", plan.dropped)
	for i, t := range plan.dups {
		if i == 10 {
			s.log.Warn("worker: more runs may be duplicated", "more", len(plan.dups)-i)
			break
		}
		s.log.Warn("worker: run may be duplicated: the previous process cut it off", "task", t.id, "seq", t.runs+1)
	}
}

// logIDs warns msg once per task ID, for the first ten, then once with the
// number left.
func (s *Supervisor) logIDs(msg string, ids []string) {
	for i, id := range ids {
		if i == 10 {
			s.log.Warn(msg, "more", len(ids)-i)
			break
		}
		s.log.Warn(msg, "task", id)
	}
}

func (s *Supervisor) restorableLocked() error {
	switch s.phase {
	case phaseRunning:
		return fmt.Errorf("%w: Restore must come before Run", ErrRunning)
	case phaseStopping, phaseStopped:
		return ErrClosed
	}
	return nil
}

// prepared is a record made ready for a registration: its state migrated
// and decoded.
type prepared struct {
	rec   *record
	state []byte
	local any
}

// prepare checks rec against the registration spec and migrates its state.
// A task without state has nothing to migrate or to misread: its version
// and kind do not matter.
func prepare(spec *Task, rec *record) (prepared, error) {
	data := rec.state
	if len(data) == 0 {
		return prepared{rec: rec}, nil
	}
	if rec.kind != spec.Kind {
		return prepared{}, fmt.Errorf("%w: task %q was kind %q, is registered as %q", ErrKindChanged, rec.id, rec.kind, spec.Kind)
	}
	if rec.version != spec.Version {
		m := spec.Migrations
		if m == nil {
			m = new(state.Migrations)
		}
		out, err := m.Apply(data, rec.version, spec.Version)
		if err != nil {
			return prepared{}, fmt.Errorf("%w: task %q (kind %q): snapshot state version %d, this binary reads %d (from %v): %w",
				ErrStateVersion, rec.id, rec.kind, rec.version, spec.Version, m.Reads(spec.Version), err)
		}
		data = out
	}
	if len(data) > MaxStateSize {
		return prepared{}, fmt.Errorf("%w: task %q: migrated state is %d bytes", ErrStateTooLarge, rec.id, len(data))
	}
	p := prepared{rec: rec, state: data}
	if spec.decode != nil {
		v, err := spec.decode(data)
		if err != nil {
			return prepared{}, fmt.Errorf("%w: task %q (kind %q, version %d): %w", ErrBadState, rec.id, rec.kind, spec.Version, err)
		}
		p.local = v
	}
	return p, nil
}

// applyLocked gives t the progress in p. The caller keeps the status counts
// and the queue. It returns how far past its bound the snapshot's due time
// was clamped, or 0: see clampDueLocked.
func (s *Supervisor) applyLocked(t *task, p prepared, now time.Time) time.Duration {
	rec := p.rec
	nowMono, nowWall := s.mono(now), now.UnixNano()
	t.nominal = nowMono + (rec.nominal - nowWall)
	t.due = nowMono + (rec.due - nowWall)
	if t.spec.cron != nil && rec.nominal != 0 {
		// A cron point is a whole second of the wall clock; the wall and
		// monotonic readings the snapshot went through may have moved it
		// by a few nanoseconds, which would make the point look unserved.
		w := time.Unix(0, rec.nominal)
		if r := w.Round(time.Second); r.Sub(w).Abs() < time.Millisecond {
			w = r
		}
		t.nominal = s.mono(w)
		t.due = t.nominal + (rec.due - rec.nominal)
	}
	t.runs = rec.runs
	if rec.failures != 0 || rec.consecutive != 0 || rec.lastErr != "" {
		c := t.coldLocked()
		c.failures, c.consecutive, c.lastErr = rec.failures, rec.consecutive, rec.lastErr
	} else if c := t.cold; c != nil {
		c.failures, c.consecutive, c.lastErr = 0, 0, ""
	}
	t.lastRun = rec.lastRun
	t.progress = true
	t.paused = rec.flags&flagPaused != 0
	t.setState(p.state)
	t.stateGen++
	t.setLocal(p.local)
	t.jit = 0
	s.setMaybeDupLocked(t, rec.flags&flagMaybeDup != 0)
	s.restorePendingLocked(t, rec.pending)
	switch {
	case rec.flags&flagDone != 0 && !t.oneOff():
		t.status = StatusDone
		return 0
	case t.paused:
		t.status = StatusPaused
		return 0
	case rec.flags&flagBackoff != 0:
		t.status = StatusBackoff
	default:
		t.status = StatusIdle
		if d := t.due - t.nominal; !t.loop() && d > 0 && (d < int64(t.spec.Every) || t.spec.cron != nil && d < int64(t.spec.Jitter)) {
			t.jit = d // the snapshot does not carry it; due - nominal is it
		}
	}
	over := s.clampDueLocked(t, nowMono)
	if t.spec.Policy == SkipMissed && t.status == StatusIdle && !t.maybeDup && t.nominal < nowMono && !t.loop() && !t.oneOff() {
		// The points that came due while no process ran the task are
		// not run.
		sl := s.skipPast(t, nowMono)
		s.totals.skipped += sl.skipped
		t.nominal, t.due, t.jit = sl.next, sl.next, 0
		if s.pastEnd(t, t.nominal) {
			t.status = StatusDone
		}
	}
	return over
}

// clampDueLocked bounds a restored due time to now + span, plus the
// task's jitter, span being the task's interval (a loop's is zero: it
// restarts at once) or, in backoff, the longest retry delay, MaxBackoff.
// The snapshot's times are wall-clock times of another process: a wall
// clock set back between the two would otherwise delay every task by the
// jump. A due time in the past is left as it is: the task is overdue and
// runs at once (in due order), and its policy sees the lateness.
// It returns how far the due time was beyond the bound, or 0.
func (s *Supervisor) clampDueLocked(t *task, now int64) time.Duration {
	span := int64(t.spec.Every)
	switch {
	case t.status == StatusBackoff:
		span = int64(s.opts.MaxBackoff)
	case t.oneOff():
		return 0 // At is a wall-clock time: it is when the task is due
	case t.spec.cron != nil:
		// The bound is the first point after now (plus jitter): a
		// wall clock set back does not hold a cron task beyond it.
		bound := s.cronAfter(t, now)
		if bound == never || t.nominal <= bound {
			return 0
		}
		over := t.nominal - bound
		t.nominal, t.due = bound, bound+t.jit
		return time.Duration(over)
	}
	// A periodic task's jitter (zero in backoff and for a loop) comes on
	// top of its interval: its due time is within span + jit of now.
	over := t.due - (now + span + t.jit)
	if over <= 0 {
		return 0
	}
	// The schedule starts again from the bound, with its jitter.
	t.nominal = now + span
	t.due = t.nominal + t.jit
	if t.status == StatusBackoff || t.loop() {
		t.nominal = now
	}
	return time.Duration(over)
}
