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

// kvSchema is the schema version of the demo's key-value map in this build,
// set with -ldflags "-X main.kvSchema=2" to show a migration:
//
//	1: {"key": "value"}
//	2: {"key": {"value": "value", "gen": 3}}, migrated from 1 with gen -1,
//	   and back to 1 (dropping gen) so that v1 can take over again
//	3: like 2 but reads neither 1 nor 2: an upgrade to it must fail cleanly
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

// register adds the map to reg with the migrations this build knows.
func (s *kvStore) register(reg *state.Registry) error {
	if err := reg.Register(state.Participant{
		Name:    "demo.kv",
		Version: s.schema,
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
	if s.schema == 2 {
		if err := reg.AddMigration("demo.kv", 1, 2, migrateKV1to2); err != nil {
			return err
		}
		// The way back: a rollback to a schema-1 build reads this.
		return reg.AddMigration("demo.kv", 2, 1, migrateKV2to1)
	}
	return nil
}

func (s *kvStore) capture(w io.Writer) error {
	s.injectPanic(fault.PanicCapture, 2)
	fault.Inject(fault.OldKillMidCapture, s.gen(), int(s.calls[2].Load()))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.schema == 1 {
		flat := make(map[string]string, len(s.m))
		for k, e := range s.m {
			flat[k] = e.Value
		}
		return json.NewEncoder(w).Encode(flat)
	}
	return json.NewEncoder(w).Encode(s.m)
}

func (s *kvStore) restore(r io.Reader) error {
	s.injectPanic(fault.PanicRestore, 3)
	m := make(map[string]kvEntry)
	if s.schema == 1 {
		var flat map[string]string
		if err := json.NewDecoder(r).Decode(&flat); err != nil {
			return err
		}
		for k, v := range flat {
			m[k] = kvEntry{Value: v}
		}
	} else if err := json.NewDecoder(r).Decode(&m); err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// migrateKV1to2 is the code_change from schema 1 to 2: entries written by a
// generation that did not record one get gen -1.
func migrateKV1to2(old []byte) ([]byte, error) {
	var flat map[string]string
	if err := json.Unmarshal(old, &flat); err != nil {
		return nil, err
	}
	m := make(map[string]kvEntry, len(flat))
	for k, v := range flat {
		m[k] = kvEntry{Value: v, Gen: -1}
	}
	return json.Marshal(m)
}

// migrateKV2to1 is the way back from schema 2 to 1, for a rollback: the
// generations are dropped, the values kept.
func migrateKV2to1(cur []byte) ([]byte, error) {
	var m map[string]kvEntry
	if err := json.Unmarshal(cur, &m); err != nil {
		return nil, err
	}
	flat := make(map[string]string, len(m))
	for k, e := range m {
		flat[k] = e.Value
	}
	return json.Marshal(flat)
}

// seed fills an empty map with n entries.
func (s *kvStore) seed(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) > 0 {
		return
	}
	for i := 0; i < n; i++ {
		s.m[fmt.Sprintf("key-%05d", i)] = kvEntry{Value: fmt.Sprintf("value-%d", i)}
	}
}

func (s *kvStore) set(k string, e kvEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = e
}

func (s *kvStore) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	body, err := json.Marshal(map[string]any{"schema": s.schema, "count": len(s.m), "entries": s.m})
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
