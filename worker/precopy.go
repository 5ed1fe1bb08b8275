package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"github.com/batonhq/baton/state"
)

// This file is the supervisor's side of state.PreCopy, the two-round
// handoff. In the old process, the first round (preCopyCapture) writes
// every task while the supervisor runs, a slice of tasks per hold of the
// lock, and starts tracking what changes: every task whose record may
// differ from what the base holds is marked dirty (markLocked, called
// where a task's record changes: dispatch, finish, Checkpoint, Pause,
// Resume, RunNow, Add, a status change, a possible duplicate, the move of
// a task in Supervisor.all), and every task or orphan removed is listed
// (markRemovedLocked). Delta writes the dirty tasks' records and the
// removed IDs: while the supervisor runs, as a middle round, after which
// the tracking starts over (the bits cleared, new lists: what changes from
// then on goes in the next round); after Freeze, as the last, which ends
// the tracking. A run in flight at a middle round goes as in flight (to
// run again), and its finish marks its task dirty again, so that a later
// round carries what it did. A dirty task is left out of the base: the
// delta has it, so that no task is in the base twice.
//
// In the new process, the base restores as a snapshot does (plan, then
// apply) and leaves the supervisor awaiting its delta (Supervisor.pcr):
// Run, Capture and Restore fail until the RestoreDelta of the last round
// or Reset. RestoreDelta, once per round, undoes what the base and the
// rounds before did for each ID the delta names (removed, or written
// again) and restores the delta's records over it as Restore would, all
// or nothing, queueing the tasks it changed; the queue is not rebuilt, so
// a delta costs what changed, not what there is. A delta says whether it
// is the last (written after Freeze); a middle one leaves the supervisor
// awaiting the next, so that Run cannot start on a state that a later
// round would change under it. Reset undoes the base and every delta.

// preCopyMinTasks is the number of tasks (orphans included) from which
// Want asks for a first round: below it, a full capture after Freeze
// costs less than the round trip. See BenchmarkScale.
const preCopyMinTasks = 2000

// preCopySliceTasks is the most tasks the first round encodes per hold of
// the lock (64 KiB of records end a slice sooner); a variable for the
// tests, which make slices small.
var preCopySliceTasks = 4096

// Bits of task.pc.
const (
	// pcDirty: changed since the first round started (old process); the
	// task is in preCopy.dirty.
	pcDirty uint8 = 1 << iota
	// pcBase: given progress by a pre-copy base (new process).
	pcBase
	// pcCreated: a data task that a pre-copy base created (new process).
	pcCreated
	// pcSeen: a registered task written in the delta being planned or
	// applied (new process).
	pcSeen
)

// Chunk kinds of the pre-copy streams (see snapshot.go).
const (
	chunkRecords = 'T'
	chunkRemoved = 'R'
	chunkHints   = 'H'
)

var (
	baseMagic  = [4]byte{'B', 'W', 'B', 1}
	deltaMagic = [4]byte{'B', 'W', 'D', 1}
)

// preCopy is the change tracking of the old process, from the first round
// to Delta or Stop.
type preCopy struct {
	dirty   []*task  // the tasks marked pcDirty, some since removed
	removed []string // IDs of the tasks and orphans removed, maybe repeated
	// stale says why the tracking no longer holds, when it does not:
	// Delta fails then, and the upgrade with it.
	stale string
}

// preCopyRestore is what the new process keeps between the base and the
// delta.
type preCopyRestore struct {
	// skipped holds the schedule points that restoring each task counted
	// as skipped (SkipMissed, pending runs a task can no longer run), for
	// the tasks with some: the delta's totals replace the base's, plus
	// these.
	skipped map[*task]uint64
	// spec is the data task spec the last delta record created parsed:
	// the data tasks a delta creates (dirty before the base reached them)
	// mostly share one, as the base's do.
	spec specCache
}

// preCopy returns the supervisor's state.PreCopy.
func (s *Supervisor) preCopy() *state.PreCopy {
	return &state.PreCopy{
		Want:         s.preCopyWant,
		Capture:      s.preCopyCapture,
		Delta:        s.preCopyDelta,
		Stop:         s.preCopyStop,
		Restore:      s.preCopyRestore,
		RestoreDelta: s.preCopyRestoreDelta,
	}
}

// preCopyWant reports whether the supervisor holds enough tasks for a
// first round to pay its round trip.
func (s *Supervisor) preCopyWant() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pcr == nil && len(s.all)+len(s.orphans) >= preCopyMinTasks
}

// markLocked records that t's record (its owner's, for a run record) may
// have changed since the first round started.
func (s *Supervisor) markLocked(t *task) {
	pc := s.pc
	if pc == nil {
		return
	}
	t = t.owner()
	if t.pc&pcDirty != 0 {
		return
	}
	t.pc |= pcDirty
	if len(pc.dirty) >= 2*len(s.all)+1024 {
		// Churn (tasks added and removed): forget the removed ones,
		// whose IDs are listed.
		live := pc.dirty[:0]
		for _, d := range pc.dirty {
			if !d.removed {
				live = append(live, d)
			}
		}
		clear(pc.dirty[len(live):])
		pc.dirty = live
	}
	pc.dirty = append(pc.dirty, t)
}

// markRemovedLocked records that the task or orphan id was removed since
// the first round started.
func (s *Supervisor) markRemovedLocked(id string) {
	pc := s.pc
	if pc == nil || pc.stale != "" {
		return
	}
	if len(pc.removed) >= 2*len(s.all)+65536 {
		pc.stale = fmt.Sprintf("more than %d tasks removed during the first round", len(pc.removed))
		pc.removed = nil
		return
	}
	pc.removed = append(pc.removed, id)
}

// staleLocked makes the tracking of a first round in progress fail, for
// why: the tasks were replaced wholesale.
func (s *Supervisor) staleLocked(why string) {
	if s.pc != nil && s.pc.stale == "" {
		s.pc.stale = why
		s.pc.removed = nil
	}
}

// stopPreCopyLocked ends the tracking, if any.
func (s *Supervisor) stopPreCopyLocked() {
	if s.pc == nil {
		return
	}
	for _, t := range s.pc.dirty {
		t.pc &^= pcDirty
	}
	s.pc = nil
}

// preCopyStop ends the tracking that the first round started.
func (s *Supervisor) preCopyStop() {
	s.mu.Lock()
	s.stopPreCopyLocked()
	s.mu.Unlock()
}

// preCopyCapture writes the first round to w while the supervisor runs,
// and starts tracking changes. It holds the lock for a slice of tasks at
// a time (preCopySliceTasks, or 64 KiB of records), and writes to w
// without it. A first round already in progress starts over.
func (s *Supervisor) preCopyCapture(w io.Writer) error {
	s.mu.Lock()
	if s.pcr != nil {
		s.mu.Unlock()
		return errAwaitingDelta("pre-copy Capture")
	}
	s.stopPreCopyLocked()
	pc := &preCopy{}
	s.pc = pc
	hdr := appendHeader(nil, s.opts.now().UnixNano(), s.lastFinish, s.totals)
	s.mu.Unlock()

	err := s.writeBase(w, pc, hdr)
	if err != nil {
		s.mu.Lock()
		if s.pc == pc {
			s.stopPreCopyLocked()
		}
		s.mu.Unlock()
		return fmt.Errorf("worker: pre-copy capture: %w", err)
	}
	return nil
}

// writeBase writes the first round of pc, its header payload hdr.
func (s *Supervisor) writeBase(w io.Writer, pc *preCopy, hdr []byte) error {
	if _, err := w.Write(baseMagic[:]); err != nil {
		return err
	}
	cw := chunkWriter{w: w, buf: make([]byte, 0, chunkTarget+4096)}
	cw.buf = append(cw.buf, hdr...)
	cw.flush()
	recs := make([]byte, 0, chunkTarget+4096)
	var orphans []*record
	listed := false
	i, j := 0, 0 // next task, next orphan
	for {
		s.mu.Lock()
		if s.pc != pc {
			s.mu.Unlock()
			return fmt.Errorf("%w: the first round was stopped or started again", ErrNoPreCopy)
		}
		now := s.opts.now()
		nowMono, nowWall := s.mono(now), now.UnixNano()
		wall := func(mono int64) int64 { return nowWall + (mono - nowMono) }
		recs = recs[:0]
		n := 0
		for scanned := 0; i < len(s.all) && n < preCopySliceTasks && scanned < 4*preCopySliceTasks && len(recs) < chunkTarget; scanned++ {
			t := s.all[i]
			i++
			if t.pc&pcDirty != 0 {
				continue // the delta writes it
			}
			r := recordOf(t, wall)
			recs = appendRecord(recs, &r)
			n++
		}
		if i >= len(s.all) && !listed {
			// Tasks added from here on are dirty: the delta has them.
			listed = true
			orphans = make([]*record, 0, len(s.orphans))
			for _, rec := range s.orphans {
				orphans = append(orphans, rec)
			}
		}
		for listed && j < len(orphans) && n < preCopySliceTasks && len(recs) < chunkTarget {
			rec := orphans[j]
			j++
			if s.orphans[rec.id] == rec { // not removed or adopted since
				recs = appendRecord(recs, rec)
				n++
			}
		}
		done := listed && j == len(orphans)
		s.mu.Unlock()
		cw.items(chunkRecords, n, recs)
		if cw.err != nil || done {
			break
		}
	}
	if cw.err == nil {
		_, cw.err = w.Write([]byte{0})
	}
	return cw.err
}

// items writes n items of kind, the bytes b, as one chunk, without
// copying them.
func (c *chunkWriter) items(kind byte, n int, b []byte) {
	if n == 0 || c.err != nil {
		return
	}
	var pre [1 + binary.MaxVarintLen64]byte
	pre[0] = kind
	p := pre[:1+binary.PutUvarint(pre[1:], uint64(n))]
	var frame [binary.MaxVarintLen64]byte
	f := frame[:binary.PutUvarint(frame[:], uint64(len(p)+len(b)))]
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc32.Update(crc32.Checksum(p, castagnoli), castagnoli, b))
	for _, part := range [][]byte{f, p, b, sum[:]} {
		if _, err := c.w.Write(part); err != nil {
			c.err = err
			return
		}
	}
}

// preCopyDelta writes what changed since the first round or the previous
// Delta began: after Freeze the last round, which ends the tracking; while
// the supervisor runs a middle one, which starts the tracking over. A
// middle round is encoded under the lock and written without it, so that
// the scheduler waits for the encoding only, not for the reader.
func (s *Supervisor) preCopyDelta(w io.Writer) error {
	s.mu.Lock()
	if s.frozen || s.pc == nil {
		defer s.mu.Unlock()
		return s.deltaLocked(w, true)
	}
	pc := s.pc
	var buf bytes.Buffer
	err := s.deltaLocked(&buf, false)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := buf.WriteTo(w); err != nil {
		// The tracking started over with what this round holds: a
		// later round would lack it.
		s.mu.Lock()
		if s.pc == pc && pc.stale == "" {
			pc.stale = "a middle round could not be written"
			pc.removed = nil
		}
		s.mu.Unlock()
		return fmt.Errorf("worker: pre-copy delta: %w", err)
	}
	return nil
}

// deltaLocked is preCopyDelta with the lock held, writing the last round
// or a middle one.
func (s *Supervisor) deltaLocked(w io.Writer, last bool) error {
	pc := s.pc
	if pc == nil {
		return fmt.Errorf("%w: Delta without a first round (Capture), or after Stop", ErrNoPreCopy)
	}
	if last {
		defer s.stopPreCopyLocked()
	}
	if pc.stale != "" {
		return fmt.Errorf("%w: the tracking of the first round broke: %s", ErrNoPreCopy, pc.stale)
	}
	now := s.opts.now()
	nowMono, nowWall := s.mono(now), now.UnixNano()
	wall := func(mono int64) int64 { return nowWall + (mono - nowMono) }
	live := 0
	for _, t := range pc.dirty {
		if !t.removed {
			live++
		}
	}
	hdr := appendHeader(nil, nowWall, s.lastFinish, s.totals)
	hdr = binary.AppendUvarint(hdr, uint64(len(pc.removed)))
	hdr = binary.AppendUvarint(hdr, uint64(live))
	var lastFlag uint64 // 1: the last round
	if last {
		lastFlag = 1
	}
	hdr = binary.AppendUvarint(hdr, lastFlag)
	if _, err := w.Write(deltaMagic[:]); err != nil {
		return fmt.Errorf("worker: pre-copy delta: %w", err)
	}
	cw := chunkWriter{w: w, buf: make([]byte, 0, chunkTarget+4096)}
	cw.buf = append(cw.buf, hdr...)
	cw.flush()
	items := make([]byte, 0, chunkTarget+4096)
	n := 0
	for _, id := range pc.removed {
		items = appendString(items, id)
		if n++; len(items) >= chunkTarget {
			cw.items(chunkRemoved, n, items)
			items, n = items[:0], 0
		}
	}
	cw.items(chunkRemoved, n, items)
	pc.removed = nil // a middle round: the next lists what is removed from here on
	items, n = items[:0], 0
	// The hints, the tasks' positions here, in the order of the records:
	// the next process registers its tasks in the same order, mostly.
	hints := make([]byte, 0, min(chunkTarget, 3*live))
	for _, t := range pc.dirty {
		t.pc &^= pcDirty // the tracking ends, or starts over, here
		if t.removed {
			continue
		}
		r := recordOf(t, wall)
		items = appendRecord(items, &r)
		if n++; len(items) >= chunkTarget {
			cw.items(chunkRecords, n, items)
			items, n = items[:0], 0
		}
		hints = binary.AppendUvarint(hints, uint64(t.idx))
	}
	pc.dirty = nil
	cw.items(chunkRecords, n, items)
	for len(hints) > 0 { // as many chunks as it takes, each whole uvarints
		end := len(hints)
		m := live
		if end > chunkTarget {
			end, m = 0, 0
			for end < chunkTarget {
				_, k := binary.Uvarint(hints[end:])
				end += k
				m++
			}
		}
		cw.items(chunkHints, m, hints[:end])
		hints, live = hints[end:], live-m
	}
	if cw.err == nil {
		_, cw.err = w.Write([]byte{0})
	}
	if cw.err != nil {
		return fmt.Errorf("worker: pre-copy delta: %w", cw.err)
	}
	return nil
}

// preCopyStream is a pre-copy base or delta, read and checked: its
// header, its records as a snapshot to iterate, the removed IDs.
type preCopyStream struct {
	snapshot
	removed []string
	// last: a delta written after Freeze, the last round.
	last bool
	// hints are the positions of the records' tasks in the old process,
	// one per record, or none.
	hints []uint64
}

// readPreCopy reads a base (delta false) or a delta from r, reading no
// byte past its end. Every failure wraps ErrCorrupt, or the reader's
// error.
func readPreCopy(r io.Reader, delta bool) (*preCopyStream, error) {
	want, what := baseMagic, "pre-copy base"
	if delta {
		want, what = deltaMagic, "pre-copy delta"
	}
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, corrupt(what+" magic", err)
	}
	if magic != want {
		return nil, fmt.Errorf("%w: %s: magic % x, want % x", ErrCorrupt, what, magic, want)
	}
	cr := chunkReader{r: r}
	payload, err := cr.next()
	if err != nil {
		return nil, err
	}
	if payload == nil {
		return nil, fmt.Errorf("%w: %s: no header", ErrCorrupt, what)
	}
	ps := &preCopyStream{snapshot: snapshot{version: formatPending}}
	d := decoder{b: payload}
	readHeader(&d, &ps.snapshot)
	var nremoved, nrecords uint64
	if delta {
		nremoved, nrecords = d.uvarint(), d.uvarint()
		switch b := d.uvarint(); {
		case d.err != nil:
		case b > 1:
			d.err = fmt.Errorf("last flag %d", b)
		default:
			ps.last = b == 1
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %s header: %w", ErrCorrupt, what, d.err)
	}
	for {
		payload, err := cr.next()
		if err != nil {
			return nil, err
		}
		if payload == nil {
			break
		}
		d := decoder{b: payload[1:]}
		n := d.uvarint()
		if d.err == nil && (n == 0 || n > uint64(len(d.b))) {
			d.err = fmt.Errorf("%d items in %d bytes", n, len(d.b))
		}
		switch kind := payload[0]; {
		case d.err != nil:
		case kind == chunkRecords:
			ps.count += n
			ps.chunks = append(ps.chunks, d.b)
		case kind == chunkRemoved && delta:
			for range n {
				id := d.bytes(MaxIDLength)
				if d.err == nil && len(id) == 0 {
					d.err = errors.New("empty task id")
				}
				ps.removed = append(ps.removed, string(id))
			}
			if d.err == nil && len(d.b) != 0 {
				d.err = errors.New("trailing bytes")
			}
		case kind == chunkHints && delta:
			for range n {
				ps.hints = append(ps.hints, d.uvarint())
			}
			if d.err == nil && len(d.b) != 0 {
				d.err = errors.New("trailing bytes")
			}
		default:
			d.err = fmt.Errorf("unknown chunk kind %#x", kind)
		}
		if d.err != nil {
			return nil, fmt.Errorf("%w: %s chunk %d: %w", ErrCorrupt, what, cr.n, d.err)
		}
	}
	if len(ps.hints) != 0 && uint64(len(ps.hints)) != ps.count {
		return nil, fmt.Errorf("%w: %s: %d hints for %d records", ErrCorrupt, what, len(ps.hints), ps.count)
	}
	if delta && (uint64(len(ps.removed)) != nremoved || ps.count != nrecords) {
		return nil, fmt.Errorf("%w: %s: %d removed and %d records, header announced %d and %d",
			ErrCorrupt, what, len(ps.removed), ps.count, nremoved, nrecords)
	}
	return ps, nil
}

// preCopyRestore restores a first round, as Restore restores a snapshot,
// and leaves the supervisor awaiting its delta.
func (s *Supervisor) preCopyRestore(r io.Reader) error {
	check := func() error {
		if err := s.restorableLocked(); err != nil {
			return err
		}
		if s.pcr != nil {
			return errAwaitingDelta("pre-copy Restore")
		}
		return nil
	}
	read := func() (*preCopyStream, error) { return readPreCopy(r, false) }
	return restoreFrom(s, check, read, s.applyBaseLocked)
}

// applyBaseLocked restores the base ps and marks what it restored.
func (s *Supervisor) applyBaseLocked(ps *preCopyStream) error {
	plan, err := s.planRestoreLocked(&ps.snapshot)
	if err != nil {
		return err
	}
	for _, t := range s.all { // the marks of an earlier base, if any
		t.pc &^= pcBase | pcCreated
	}
	s.pcr = &preCopyRestore{skipped: make(map[*task]uint64)}
	s.undo = s.newUndoLocked(&plan)
	s.applyRestoreLocked(&ps.snapshot, &plan)
	for _, t := range plan.matched {
		switch {
		case t == nil:
		case plan.created(t):
			t.pc |= pcCreated
		default:
			t.pc |= pcBase
		}
	}
	// Room in the queue for the delta's pushes, so that none of them
	// copies the whole queue in the pause.
	s.q.ents = slices.Grow(s.q.ents, s.q.len()/4+1024)
	s.logRestore(&ps.snapshot, plan)
	return nil
}

// applyRestoredLocked is applyLocked for a restore, noting what it
// counted as skipped while a pre-copy restore awaits its delta.
func (s *Supervisor) applyRestoredLocked(t *task, p prepared, now time.Time) time.Duration {
	before := s.totals.skipped
	over := s.applyLocked(t, p, now)
	if s.pcr != nil && s.totals.skipped != before {
		s.pcr.skipped[t] += s.totals.skipped - before
	}
	return over
}

// deltaItem is one record of a delta and what it restores.
type deltaItem struct {
	rec    record
	t      *task // the registered task it gives progress, or nil
	create *task // the data task it creates, or nil
	p      prepared
	orphan bool // kept as an orphan
}

// deltaPlan is what a delta does, prepared and checked.
type deltaPlan struct {
	items []deltaItem
	// touched holds the IDs whose base restore is undone: those removed
	// (false) and those of the records that no registered task claims
	// (true: written again). The records of registered tasks overwrite
	// what the base gave them.
	touched map[string]bool
}

// preCopyRestoreDelta applies a delta over the base that preCopyRestore
// restored: all or nothing, as Restore.
func (s *Supervisor) preCopyRestoreDelta(r io.Reader) error {
	read := func() (*preCopyStream, error) { return readPreCopy(r, true) }
	return restoreFrom(s, s.deltaRestorableLocked, read, func(ps *preCopyStream) error {
		plan, err := s.planDeltaLocked(ps)
		if err == nil {
			s.applyDeltaLocked(ps, plan)
		}
		return err
	})
}

func (s *Supervisor) deltaRestorableLocked() error {
	if err := s.restorableLocked(); err != nil {
		return err
	}
	if s.pcr == nil {
		return fmt.Errorf("%w: RestoreDelta without a pre-copy Restore before it (or after Reset)", ErrNoPreCopy)
	}
	return nil
}

// planDeltaLocked parses the records of a delta and prepares what each
// restores, changing nothing. A record's registered task is looked for
// first where its hint says, as lookupLocked does, sparing a lookup in
// the index per record.
func (s *Supervisor) planDeltaLocked(ps *preCopyStream) (plan deltaPlan, err error) {
	plan.touched = make(map[string]bool, len(ps.removed))
	for _, id := range ps.removed {
		plan.touched[id] = false
	}
	// ps.count is at most the delta's size: readPreCopy checked it.
	plan.items = make([]deltaItem, 0, ps.count)
	defer func() { // pcSeen marked the registered tasks written
		for i := range plan.items {
			if t := plan.items[i].t; t != nil {
				t.pc &^= pcSeen
			}
		}
		if err != nil {
			plan = deltaPlan{}
		}
	}()
	it := ps.iter()
	for it.next() {
		plan.items = append(plan.items, deltaItem{rec: it.rec})
		item := &plan.items[len(plan.items)-1]
		rec := &item.rec
		t := s.deltaLookupLocked(ps, it.i-1, rec.idb)
		if t != nil && t.pc&pcCreated == 0 {
			if t.pc&pcSeen != 0 {
				return plan, fmt.Errorf("%w: task %q is in the pre-copy delta twice", ErrCorrupt, t.id)
			}
			t.pc |= pcSeen
			item.t, rec.id = t, t.id // the deferred clear sees it
			p, err := prepare(t.spec, rec)
			if err != nil {
				return plan, err
			}
			item.p = p
			continue
		}
		rec.id = string(rec.idb)
		if plan.touched[rec.id] {
			return plan, fmt.Errorf("%w: task %q is in the pre-copy delta twice", ErrCorrupt, rec.id)
		}
		plan.touched[rec.id] = true
		if err := s.planDeltaUnmatchedLocked(item); err != nil {
			return plan, err
		}
	}
	return plan, it.err
}

// deltaLookupLocked returns the task of ID id, record i of the delta: at
// the position its hint names, if it is there, else by ID.
func (s *Supervisor) deltaLookupLocked(ps *preCopyStream, i int, id []byte) *task {
	if i < len(ps.hints) {
		if h := ps.hints[i]; h < uint64(len(s.all)) {
			if t := s.all[h]; t.id == string(id) {
				return t
			}
		}
	}
	return s.byID.getBytes(s.all, id)
}

// planDeltaUnmatchedLocked plans a delta record that no registered task
// claims, as planUnmatchedLocked does a snapshot's: a data task created,
// or an orphan, or dropped.
func (s *Supervisor) planDeltaUnmatchedLocked(item *deltaItem) error {
	rec := &item.rec
	if rec.flags&flagData == 0 {
		if rec.orphanGen == 0 {
			rec.orphanGen++
			item.orphan = true
		}
		return nil // dropped after two generations
	}
	t, p, err := s.dataTaskLocked(rec, &s.pcr.spec)
	item.create, item.p, item.orphan = t, p, t == nil
	return err
}

// applyDeltaLocked undoes what the base did for the touched IDs, then
// restores the delta's records, queues what changed and takes over the
// delta's totals.
func (s *Supervisor) applyDeltaLocked(ps *preCopyStream, plan deltaPlan) {
	now := s.opts.now()
	pcr, u := s.pcr, s.undo
	next := &restoreUndo{}
	if u != nil { // at the end of the chain: the base's, then each round's
		last := u
		for last.next != nil {
			last = last.next
		}
		last.next = next
	}
	for i := range plan.items { // the registered tasks written again
		if t := plan.items[i].t; t != nil {
			t.pc |= pcSeen
		}
	}
	for id, again := range plan.touched {
		delete(s.orphans, id)
		t := s.byID.get(s.all, id)
		switch {
		case t == nil || t.pc&pcSeen != 0:
		case t.pc&pcCreated != 0:
			delete(pcr.skipped, t)
			s.dropLocked(t)
		case t.pc&pcBase != 0 && !again:
			// Removed in the old process: back as before the base.
			delete(pcr.skipped, t)
			t.pc &^= pcBase
			if sv, ok := u.savedOf(t); ok {
				s.putBackLocked(sv)
			} else {
				s.unrestoreLocked(t, now)
			}
			s.queueRestoredLocked(t)
		}
	}
	var rp restorePlan // for the log's figures
	for i := range plan.items {
		item := &plan.items[i]
		item.p.rec = &item.rec
		switch {
		case item.t != nil:
			t := item.t
			t.pc &^= pcSeen
			if t.pc&pcBase == 0 {
				t.pc |= pcBase
				if !t.fresh() {
					next.saved = append(next.saved, saveTask(t))
				}
				next.matched = append(next.matched, t)
			}
			if len(pcr.skipped) > 0 {
				delete(pcr.skipped, t)
			}
			s.applyMatchLocked(&rp, t, item.p, now)
			s.queueRestoredLocked(t)
		case item.create != nil:
			t := item.create
			if over := s.applyRestoredLocked(t, item.p, now); over > 0 {
				rp.clamped++
				rp.maxOver = max(rp.maxOver, over)
			}
			t.pc |= pcCreated
			t.idx = uint32(len(s.all))
			s.all = append(s.all, t)
			s.byID.add(s.all, t)
			s.counts[t.status]++
			next.created = append(next.created, t)
			s.queueRestoredLocked(t)
			rp.creates = append(rp.creates, t)
		case item.orphan:
			if s.orphans == nil {
				s.orphans = make(map[string]*record)
			}
			s.orphans[item.rec.id] = &item.rec
		default:
			rp.dropped = append(rp.dropped, item.rec.id)
		}
	}
	s.totals = ps.totals
	for t, n := range pcr.skipped {
		if !t.removed {
			s.totals.skipped += n
		}
	}
	s.prevLastFinish = ps.lastFinish
	if ps.last {
		s.restored = true
		s.awaitFirst.Store(true)
		s.pcr = nil
	}
	s.log.Info("worker: restored pre-copy delta", "last", ps.last, "tasks", len(plan.items), "removed", len(ps.removed),
		"data_tasks_created", len(rp.creates), "dropped", len(rp.dropped), "tasks_now", len(s.all),
		"orphaned", len(s.orphans), "captured", time.Unix(0, ps.captured))
	if rp.clamped > 0 {
		s.log.Warn("worker: restored due times beyond one interval from now were clamped; the wall clock may have moved back",
			"tasks", rp.clamped, "most_beyond", rp.maxOver)
	}
}

// queueRestoredLocked queues t, whose record a delta changed, anew: its
// earlier queue entry, if any, goes stale, by a new push or, when t is
// not to be queued, by qseq 0 (a nonzero qseq says queued, and a move in
// Supervisor.all would push t again; see taskHeap).
func (s *Supervisor) queueRestoredLocked(t *task) {
	if t.removed || t.held || t.status == StatusDone || t.status == StatusPaused {
		t.qseq = 0
		return
	}
	s.pushLocked(t)
}

// errAwaitingDelta is what op returns while a pre-copy restore awaits
// its delta.
func errAwaitingDelta(op string) error {
	return fmt.Errorf("%w: %s refused: the pre-copy base is restored and its delta (RestoreDelta) is not; the tasks are incomplete until it is, or until Reset", ErrPreCopyIncomplete, op)
}
