package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/batonhq/baton/internal/fault"
	"github.com/batonhq/baton/state"
)

// kvSchema is the schema of the demo's key-value map in this build, set
// with -ldflags "-X main.kvSchema=2" to show a migration:
//
//	1: key -> value
//	2: key -> value and gen, migrated from 1 with gen -1, and back to 1
//	   (dropping gen) so that a schema-1 build can take over again
//	3: like 2 but reads neither 1 nor 2: an upgrade to it must fail cleanly
//
// The section's version names the schema and its encoding (kvcodec.go):
// builds before the binary codec wrote schemas 1 and 2 as JSON.
var kvSchema = "1"

// kvEntry is an entry of the map in memory, whatever the schema.
type kvEntry struct {
	Value string `json:"value"`
	Gen   int    `json:"gen"`
}

// kvStore is application state that survives upgrades: a map of a few
// thousand entries, seeded by the first generation, to which every
// generation adds its own entry.
type kvStore struct {
	schema uint32
	mu     sync.Mutex
	m      map[string]kvEntry
	// pending is a restored section, checked but not yet built into m, and
	// n its number of entries; later are the changes made meanwhile, in
	// order. Restore only checks the section, so that the new process
	// serves without waiting for the map (a 100,000-entry map takes tens
	// of milliseconds to build); every use of m builds it first
	// (loadLocked), and build does it in the background once the process
	// serves.
	pending []byte
	n       int
	later   []func()
	// base is the encoding the map was last built from, of baseN pairs,
	// and changed the keys set since, each once, in order: while base is
	// set, a capture writes base and then the changed entries
	// (writeKVOver), a copy instead of a walk of every entry, which on a
	// 100,000-entry map is most of what the old process does while its
	// participants are frozen. base goes (and captures encode the whole
	// map again) once changed passes an eighth of baseN, or when seed
	// fills the map. The demo never deletes a key; a delete would have to
	// drop base too.
	base    string
	baseN   int
	changed []string
	inBase  map[string]bool // the keys of changed

	// generation and calls serve the fault injection of the reliability
	// tests (a panic in the Nth call of a callback, -tags batonfault).
	generation func() int
	calls      [4]atomic.Int64 // Freeze, Thaw, Capture, Restore
	attempt    int             // the upgrade attempt that started this process, 0 if none
}

func (s *kvStore) gen() int {
	if s.generation == nil {
		return 0
	}
	return s.generation()
}

// handoffAttempt reads the attempt field of BATON_HANDOFF, which
// upgrader.New removes: panic-restore, like the new-process steps, names
// the attempt, so that the next attempt's new process restores normally.
func handoffAttempt() int {
	for _, f := range strings.Split(os.Getenv("BATON_HANDOFF"), ";") {
		if v, ok := strings.CutPrefix(f, "attempt="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// injectPanic panics if BATON_FAULT asks for it in this call of the
// callback: step@gen.n makes the nth call in generation gen panic.
func (s *kvStore) injectPanic(step fault.Step, i int) {
	gen := s.gen()
	n := int(s.calls[i].Add(1))
	if step == fault.PanicRestore {
		n = s.attempt
	}
	fault.Inject(step, gen, n)
}

func newKVStore() (*kvStore, error) {
	v, err := strconv.ParseUint(kvSchema, 10, 32)
	if err != nil || v < 1 || v > 3 {
		return nil, fmt.Errorf("build has kvSchema %q; want 1, 2 or 3", kvSchema)
	}
	return &kvStore{schema: uint32(v), m: make(map[string]kvEntry), attempt: handoffAttempt()}, nil
}

// register adds the map to reg with the migrations this build knows
// (kvcodec.go has the versions).
func (s *kvStore) register(reg *state.Registry) error {
	if err := reg.Register(state.Participant{
		Name:    "demo.kv",
		Version: kvVersion(s.schema),
		Freeze: func(context.Context) error {
			s.injectPanic(fault.PanicFreeze, 0)
			return nil
		},
		Thaw:    func() { s.injectPanic(fault.PanicThaw, 1) },
		Capture: s.capture,
		Restore: s.restore,
	}); err != nil {
		return err
	}
	var steps []kvStep
	switch s.schema {
	case 1:
		// The JSON of builds before the binary codec, both ways.
		steps = []kvStep{{kvJSONFlat, kvFlat, migrateJSONFlat}, {kvFlat, kvJSONFlat, migrateToJSONFlat}}
	case 2:
		steps = []kvStep{
			{kvJSONFlat, kvFlat, migrateJSONFlat}, {kvJSONGen, kvGen, migrateJSONGen},
			{kvFlat, kvGen, migrateKV1to2},
			// The way back: a rollback to a schema-1 build reads
			// this, and one from before the binary codec reads 1.
			{kvGen, kvFlat, migrateKV2to1}, {kvFlat, kvJSONFlat, migrateToJSONFlat},
		}
	}
	for _, st := range steps {
		if err := reg.AddMigration("demo.kv", st.from, st.to, st.fn); err != nil {
			return err
		}
	}
	return nil
}

type kvStep struct {
	from, to uint32
	fn       state.MigrateFunc
}

func (s *kvStore) capture(w io.Writer) error {
	s.injectPanic(fault.PanicCapture, 2)
	fault.Inject(fault.OldKillMidCapture, s.gen(), int(s.calls[2].Load()))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadLocked()
	if s.base != "" {
		return writeKVOver(w, s.base, s.baseN, s.changed, s.m, s.schema != 1)
	}
	return writeKV(w, s.m, s.schema != 1)
}

// restore reads and checks the section and keeps it for loadLocked: all
// that can fail in decoding it fails here, and the map is built later.
func (s *kvStore) restore(r io.Reader) error {
	s.injectPanic(fault.PanicRestore, 3)
	b, err := readKV(r)
	if err != nil {
		return err
	}
	n, err := checkKV(b, s.schema != 1)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m, s.pending, s.n, s.later = nil, b, n, nil
	s.dropBaseLocked()
	s.mu.Unlock()
	return nil
}

// loadLocked builds the map from a restored section, if one is pending,
// and applies the changes made since.
func (s *kvStore) loadLocked() {
	if s.pending == nil {
		if s.m == nil {
			s.m = make(map[string]kvEntry)
		}
		return
	}
	s.m, s.base = buildKV(s.pending, s.schema != 1, s.n)
	s.baseN = s.n
	if s.baseN > len(s.m)+len(s.m)/8+16 {
		// Keys set again over generations pile up in base: encode
		// the map anew, without them, at the next capture.
		s.dropBaseLocked()
	}
	later := s.later
	s.pending, s.n, s.later = nil, 0, nil
	for _, f := range later {
		f()
	}
}

// putLocked sets k in the built map and notes it for the next capture.
func (s *kvStore) putLocked(k string, e kvEntry) {
	s.m[k] = e
	if s.base == "" || s.inBase[k] {
		return
	}
	if len(s.changed) >= s.baseN/8+16 {
		s.dropBaseLocked()
		return
	}
	if s.inBase == nil {
		s.inBase = make(map[string]bool)
	}
	s.inBase[k] = true
	s.changed = append(s.changed, k)
}

func (s *kvStore) dropBaseLocked() {
	s.base, s.baseN, s.changed, s.inBase = "", 0, nil, nil
}

// build builds the map if a restore left it pending: the demo calls it
// once it serves, so that the first use of the map does not wait for it.
func (s *kvStore) build() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadLocked()
}

// whenLoaded runs f, under the lock, on the map: now if it is built, else
// right after it is.
func (s *kvStore) whenLoaded(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil {
		s.later = append(s.later, f)
		return
	}
	s.loadLocked()
	f()
}

// seed fills an empty map with n entries.
func (s *kvStore) seed(n int) {
	s.whenLoaded(func() {
		if len(s.m) > 0 {
			return
		}
		s.dropBaseLocked()
		for i := 0; i < n; i++ {
			s.m[fmt.Sprintf("key-%05d", i)] = kvEntry{Value: fmt.Sprintf("value-%d", i)}
		}
	})
}

func (s *kvStore) set(k string, e kvEntry) {
	s.whenLoaded(func() { s.putLocked(k, e) })
}

func (s *kvStore) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.loadLocked()
	body, err := json.Marshal(map[string]any{"schema": s.schema, "count": len(s.m), "entries": s.m})
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
