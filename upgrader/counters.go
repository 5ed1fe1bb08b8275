package upgrader

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/batonhq/baton/state"
)

// countersSection is the state section that carries the counters.
const countersSection = "baton.counters"

// A Counter is a monotonic count that survives upgrades exactly.
type Counter struct{ v atomic.Uint64 }

// Add adds n and returns the new count.
func (c *Counter) Add(n uint64) uint64 { return c.v.Add(n) }

// Inc adds one and returns the new count.
func (c *Counter) Inc() uint64 { return c.v.Add(1) }

// Load returns the count.
func (c *Counter) Load() uint64 { return c.v.Load() }

// Counters are named monotonic counters that count across generations, so
// that a total such as "requests answered by the service" or a Prometheus
// counter is one continuous series over upgrades. Their values travel in the
// snapshot; what the old process still counts while it drains (the requests
// it answers after the handoff) reaches the new process when the old one has
// drained, so nothing is counted twice or lost.
//
// The zero Counters is ready to use; it is not carried across upgrades
// (only the Upgrader's own, from Upgrader.Counters, is). Counters are safe
// for concurrent use.
type Counters struct {
	mu   sync.Mutex
	vals map[string]*Counter
	base map[string]uint64 // values at the last capture; nil if none
	// onRestore is the fault injection point "in the middle of receiving
	// state": the counters section is restored first, while the rest of the
	// snapshot is still on its way.
	onRestore func()
}

func newCounters() *Counters { return &Counters{vals: make(map[string]*Counter)} }

// Counter returns the counter called name, creating it at zero.
func (c *Counters) Counter(name string) *Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctr, ok := c.vals[name]
	if !ok {
		if c.vals == nil {
			c.vals = make(map[string]*Counter)
		}
		ctr = new(Counter)
		c.vals[name] = ctr
	}
	return ctr
}

// Values returns every counter's value.
func (c *Counters) Values() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.vals))
	for name, ctr := range c.vals {
		out[name] = ctr.Load()
	}
	return out
}

// add adds vals to the counters.
func (c *Counters) add(vals map[string]uint64) {
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		c.Counter(name).Add(vals[name])
	}
}

// sinceCapture returns what was counted after the last capture.
func (c *Counters) sinceCapture() map[string]uint64 {
	now := c.Values()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64)
	for name, v := range now {
		if d := v - c.base[name]; d > 0 {
			out[name] = d
		}
	}
	return out
}

func (c *Counters) participant() state.Participant {
	// restored is what Restore added, for Reset to take back when a later
	// section fails and the registry undoes the whole restore. The
	// registry calls Restore and Reset one at a time.
	var restored map[string]uint64
	return state.Participant{
		Name:    countersSection,
		Version: 1,
		// Counting goes on while frozen: what is counted after the
		// capture is sent on when the old process exits.
		Freeze: func(context.Context) error { return nil },
		Thaw: func() {
			c.mu.Lock()
			c.base = nil
			c.mu.Unlock()
		},
		Capture: func(w io.Writer) error {
			vals := c.Values()
			c.mu.Lock()
			c.base = vals
			c.mu.Unlock()
			return json.NewEncoder(w).Encode(vals)
		},
		Restore: func(r io.Reader) error {
			if c.onRestore != nil {
				c.onRestore()
			}
			var vals map[string]uint64
			if err := json.NewDecoder(r).Decode(&vals); err != nil {
				return fmt.Errorf("counters: %w", err)
			}
			c.add(vals)
			restored = vals
			return nil
		},
		// Restore adds to what this process counted before it, so the
		// registry's own undo (restore a copy captured before) would count
		// twice: take back exactly what was added.
		Reset: func() {
			for name, v := range restored {
				c.Counter(name).Add(-v) // two's complement: subtracts v
			}
			restored = nil
		},
	}
}
