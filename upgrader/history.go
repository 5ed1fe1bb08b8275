package upgrader

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/batonhq/baton/state"
)

// historySection is the state section that carries the upgrade history, so
// that `baton status` on any generation shows the service's recent upgrades.
const (
	historySection = "baton.history"
	historyLen     = 20
)

// Record is one upgrade in the history.
type Record struct {
	ID         string        `json:"id"`
	Started    time.Time     `json:"started"`
	Duration   time.Duration `json:"duration_ns"`
	Result     string        `json:"result"` // "success", "failure" or "rolled_back"
	Step       string        `json:"step,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	FromPid    int           `json:"from_pid"`
	ToPid      int           `json:"to_pid,omitempty"`
	Generation int           `json:"generation"` // of the process that was upgraded
	StateBytes int64         `json:"state_bytes,omitempty"`
}

// history keeps the last upgrades. The old process captures it with a
// pending record for the upgrade under way; the new process completes that
// record when it is ready, since the old one may be gone before it could.
type history struct {
	mu      sync.Mutex
	records []Record
	pending *Record // the upgrade being handed over, at capture time
}

func (h *history) add(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	if len(h.records) > historyLen {
		h.records = h.records[len(h.records)-historyLen:]
	}
}

func (h *history) list() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.records...)
}

// setPending marks the upgrade the next capture belongs to; nil clears it.
func (h *history) setPending(r *Record) {
	h.mu.Lock()
	h.pending = r
	h.mu.Unlock()
}

type historyWire struct {
	Records []Record `json:"records"`
	Pending *Record  `json:"pending,omitempty"`
}

func (h *history) participant() state.Participant {
	return state.Participant{
		Name:    historySection,
		Version: 1,
		Capture: func(w io.Writer) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			return json.NewEncoder(w).Encode(historyWire{Records: h.records, Pending: h.pending})
		},
		Restore: func(r io.Reader) error {
			var wire historyWire
			if err := json.NewDecoder(r).Decode(&wire); err != nil {
				return fmt.Errorf("history: %w", err)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.records = wire.Records
			h.pending = wire.Pending
			return nil
		},
	}
}

// completePending records the upgrade that started this process as a
// success, if the snapshot carried one.
func (h *history) completePending(pid int, now time.Time) {
	h.mu.Lock()
	p := h.pending
	h.pending = nil
	h.mu.Unlock()
	if p == nil {
		return
	}
	p.Result, p.ToPid, p.Duration = resultSuccess, pid, now.Sub(p.Started)
	h.add(*p)
}

// Upgrade results, the values of Record.Result.
const (
	resultSuccess = "success"
	resultFailure = "failure"
	// resultRolledBack: the new process failed its probation and this
	// process took the service back (ErrRolledBack).
	resultRolledBack = "rolled_back"
)
