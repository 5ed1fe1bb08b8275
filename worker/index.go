package worker

import (
	"hash/maphash"
	"unsafe"
)

// taskIndex finds the registered tasks by ID. It is an open-addressing
// hash table (linear probing, at most 3/4 full) of positions in
// Supervisor.all: 4 bytes a slot, 5 to 11 bytes a task, where a
// map[string]*task took 40 to 60 (its 24-byte slots, control bytes, growth
// slack). A slot holds the position plus one in its low shift bits (0 is
// empty; a position is below the table's size) and, above them, the top
// bits of the ID's hash, so that a probe compares an ID only when those
// bits match.
//
// It indexes exactly all[:n]: add is called with t appended at all[n],
// remove before t leaves all, moved after a task changed position.
type taskIndex struct {
	seed  maphash.Seed
	slots []uint32 // a power of two long, or empty
	shift uint     // log2(len(slots))
	n     int
}

const minIndexSlots = 16

// hash returns the hash of id.
func (x *taskIndex) hash(id string) uint64 { return maphash.String(x.seed, id) }

// mask returns the mask of the position bits of a slot.
func (x *taskIndex) mask() uint32 { return 1<<x.shift - 1 }

// tag returns the bits of hash h kept in a slot, above the position.
func (x *taskIndex) tag(h uint64) uint32 { return uint32(h>>32) &^ x.mask() }

// get returns the task of ID id in all, or nil.
func (x *taskIndex) get(all []*task, id string) *task {
	if x.n == 0 {
		return nil
	}
	h := x.hash(id)
	tag, pm, sm := x.tag(h), x.mask(), uint64(len(x.slots)-1)
	for i := h & sm; ; i = (i + 1) & sm {
		v := x.slots[i]
		if v == 0 {
			return nil
		}
		if v&^pm == tag {
			if t := all[v&pm-1]; t.id == id {
				return t
			}
		}
	}
}

// getBytes is get for an ID in bytes, without copying them.
func (x *taskIndex) getBytes(all []*task, id []byte) *task {
	return x.get(all, unsafe.String(unsafe.SliceData(id), len(id)))
}

// add indexes t, just appended to all at position x.n, whose ID is not
// indexed.
func (x *taskIndex) add(all []*task, t *task) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.grow(all)
	}
	x.place(x.hash(t.id), t.idx)
	x.n++
}

// place puts position pos, of an ID of hash h, in the first free slot
// from its home.
func (x *taskIndex) place(h uint64, pos uint32) {
	sm := uint64(len(x.slots) - 1)
	i := h & sm
	for x.slots[i] != 0 {
		i = (i + 1) & sm
	}
	x.slots[i] = x.tag(h) | (pos + 1)
}

// grow doubles the table and indexes all[:x.n] again, walking all in
// order rather than the old table, so that the IDs are read in the order
// they were allocated.
func (x *taskIndex) grow(all []*task) {
	size := max(minIndexSlots, 2*len(x.slots))
	if x.slots == nil {
		x.seed = maphash.MakeSeed()
	}
	x.slots = make([]uint32, size)
	x.shift = uint(0)
	for 1<<x.shift < size {
		x.shift++
	}
	for _, t := range all[:x.n] {
		x.place(x.hash(t.id), t.idx)
	}
}

// find returns the slot of position pos, whose task has ID id.
func (x *taskIndex) find(id string, pos uint32) uint64 {
	h := x.hash(id)
	pm, sm := x.mask(), uint64(len(x.slots)-1)
	for i := h & sm; ; i = (i + 1) & sm {
		if x.slots[i]&pm == pos+1 {
			return i
		}
	}
}

// remove forgets t, still at all[t.idx]. The entries after its slot that
// are not at home move back into the hole (backward-shift deletion), so
// that no probe sequence is cut and no tombstone is left.
func (x *taskIndex) remove(all []*task, t *task) {
	i := x.find(t.id, t.idx)
	pm, sm := x.mask(), uint64(len(x.slots)-1)
	for j := (i + 1) & sm; ; j = (j + 1) & sm {
		v := x.slots[j]
		if v == 0 {
			break
		}
		home := x.hash(all[v&pm-1].id) & sm
		// v stays if its home is cyclically within (i, j].
		if i <= j && (home <= i || home > j) || i > j && home <= i && home > j {
			x.slots[i] = v
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
}

// moved records that t moved from position from to t.idx.
func (x *taskIndex) moved(t *task, from uint32) {
	i := x.find(t.id, from)
	x.slots[i] = x.slots[i]&^x.mask() | (t.idx + 1)
}
