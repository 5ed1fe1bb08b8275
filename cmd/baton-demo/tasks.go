package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/batonhq/baton/state"
	"github.com/batonhq/baton/worker"
)

// The demo's background work: n periodic tasks, each keeping a counter in
// its state. With -task-log every run appends "task_id seq pid" to a file,
// so a test can check every run from outside, across generations.
//
// The task state's schema follows kvSchema: 1 is the counter as 8 bytes,
// 2 and 3 are JSON {"count": n}, migrated from 1. Builds with schema 2 or
// more no longer have task-00000, to show how a task removed by a release
// is reported.

func taskID(i int) string { return fmt.Sprintf("task-%05d", i) }

// taskLog appends run records to a file through a buffer that is flushed
// when the tasks freeze for a handoff and when the process stops, so the
// records of one generation are all written before the next one's.
type taskLog struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func openTaskLog(path string) (*taskLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &taskLog{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (l *taskLog) record(id string, seq uint64, pid int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.WriteString(id)
	l.w.WriteByte(' ')
	l.w.WriteString(strconv.FormatUint(seq, 10))
	l.w.WriteByte(' ')
	l.w.WriteString(strconv.Itoa(pid))
	l.w.WriteByte(' ')
	l.w.WriteString(strconv.FormatInt(at.UnixMilli(), 10))
	l.w.WriteByte('\n')
}

func (l *taskLog) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

func (l *taskLog) close() error {
	err := l.flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// participant flushes the log once the tasks are frozen: it is registered
// after the supervisor, and the registry freezes in registration order.
func (l *taskLog) participant() state.Participant {
	return state.Participant{
		Name:    "demo.tasklog",
		Version: 1,
		Freeze:  func(context.Context) error { return l.flush() },
		Capture: func(io.Writer) error { return nil },
		Restore: func(io.Reader) error { return nil },
	}
}

// kindCounter is the kind of the -tasks tasks, registered by ID or, with
// -tasks-as-data, as a Kind whose tasks are data.
const kindCounter = "demo.counter"

// counterKind returns the body and state schema of the -tasks tasks: each
// run counts itself in the task's state, and records itself in the log.
func counterKind(log *taskLog, schema uint32) (worker.Kind, error) {
	pid := os.Getpid()
	var mig *state.Migrations
	if schema >= 2 {
		mig = new(state.Migrations)
		if err := mig.Add(1, 2, migrateTask1to2); err != nil {
			return worker.Kind{}, err
		}
	}
	version := min(schema, 2)
	run := func(ctx context.Context, r *worker.Run) error {
		count, err := decodeTaskState(r.State(), version)
		if err != nil {
			return err
		}
		count++
		if log != nil {
			log.record(r.ID(), r.Seq(), pid, time.Now())
		}
		return r.Checkpoint(encodeTaskState(count, version))
	}
	return worker.Kind{Name: kindCounter, Version: version, Migrations: mig, Run: run}, nil
}

// firstTask is the index of the first -tasks task: task-00000 was retired
// in schema 2.
func firstTask(schema uint32) int {
	if schema >= 2 {
		return 1
	}
	return 0
}

// addTasks registers n tasks running every interval, by ID: every
// generation adds them before its restore.
func addTasks(sup *worker.Supervisor, n int, every, jitter time.Duration, log *taskLog, schema uint32) error {
	k, err := counterKind(log, schema)
	if err != nil {
		return err
	}
	for i := firstTask(schema); i < n; i++ {
		t := worker.Task{ID: taskID(i), Kind: k.Name, Version: k.Version, Migrations: k.Migrations,
			Every: every, Jitter: jitter, Policy: worker.CatchUp, Run: k.Run}
		if err := sup.Add(t); err != nil {
			return err
		}
	}
	return nil
}

// addDataTasks creates the n tasks of -tasks-as-data: data tasks of kind
// demo.counter, which must be registered. Only a process that restored no
// tasks section (the first generation) creates them; the later ones
// register the kind only, and their restore creates the tasks from the
// snapshot, as they were, those deleted over HTTP included.
func addDataTasks(sup *worker.Supervisor, n int, every, jitter time.Duration, schema uint32) error {
	for i := firstTask(schema); i < n; i++ {
		t := worker.Task{ID: taskID(i), Kind: kindCounter, Every: every, Jitter: jitter, Policy: worker.CatchUp}
		if err := sup.Add(t); err != nil {
			return err
		}
	}
	return nil
}

// addBadTasks registers the misbehaving tasks of the supervision demos:
// bad tasks panic on every run; hung tasks ignore their context and never
// return, as a run stuck in a call without a deadline does, which the
// freeze bound cuts off and the stop bound abandons.
func addBadTasks(sup *worker.Supervisor, bad, hung int, every time.Duration) error {
	for i := 0; i < bad; i++ {
		err := sup.Add(worker.Task{ID: fmt.Sprintf("bad-%05d", i), Every: every,
			Run: func(context.Context, *worker.Run) error { panic("this task always panics") }})
		if err != nil {
			return err
		}
	}
	never := make(chan struct{}) // never closed
	for i := 0; i < hung; i++ {
		err := sup.Add(worker.Task{ID: fmt.Sprintf("hung-%05d", i), Every: every,
			Run: func(context.Context, *worker.Run) error { <-never; return nil }})
		if err != nil {
			return err
		}
	}
	return nil
}

type taskStateV2 struct {
	Count uint64 `json:"count"`
}

func decodeTaskState(b []byte, version uint32) (uint64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if version == 1 {
		if len(b) != 8 {
			return 0, fmt.Errorf("task state of %d bytes, want 8", len(b))
		}
		return binary.BigEndian.Uint64(b), nil
	}
	var st taskStateV2
	err := json.Unmarshal(b, &st)
	return st.Count, err
}

func encodeTaskState(count uint64, version uint32) []byte {
	if version == 1 {
		return binary.BigEndian.AppendUint64(nil, count)
	}
	b, _ := json.Marshal(taskStateV2{Count: count})
	return b
}

// migrateTask1to2 turns the 8-byte counter into JSON.
func migrateTask1to2(old []byte) ([]byte, error) {
	if len(old) == 0 {
		return old, nil
	}
	if len(old) != 8 {
		return nil, errors.New("task state v1 is not 8 bytes")
	}
	return json.Marshal(taskStateV2{Count: binary.BigEndian.Uint64(old)})
}

// serveTasks answers GET /tasks: totals, and the tasks of one page
// (?after=ID&limit=N, at most 1000) or one task (?id=ID).
func serveTasks(sup *worker.Supervisor) http.HandlerFunc {
	type taskJSON struct {
		ID       string `json:"id"`
		Runs     uint64 `json:"runs"`
		LastSeq  uint64 `json:"last_seq"`
		Failures uint64 `json:"failures"`
		// Consecutive counts failures since the last success: the
		// backoff, which survives upgrades.
		Consecutive uint64 `json:"consecutive_failures"`
		Status      string `json:"status"`
		LastError   string `json:"last_error,omitempty"`
		// MaybeDuplicate: the next run repeats one cut off in flight.
		MaybeDuplicate bool `json:"maybe_duplicate,omitempty"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		st := sup.Stats()
		out := map[string]any{
			"count":            st.Tasks,
			"runs_total":       st.RunsTotal,
			"failures_total":   st.FailuresTotal,
			"min_runs":         st.MinRuns,
			"max_runs":         st.MaxRuns,
			"orphaned":         st.Orphaned,
			"frozen":           st.Frozen,
			"pause_ns":         st.Handoff.Pause().Nanoseconds(),
			"abandoned_total":  st.AbandonedTotal,
			"maybe_duplicated": st.MaybeDuplicated,
		}
		var infos []worker.TaskInfo
		if id := r.URL.Query().Get("id"); id != "" {
			if ti, ok := sup.Task(id); ok {
				infos = append(infos, ti)
			}
		} else {
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			if limit <= 0 || limit > 1000 {
				limit = worker.DefaultPageSize
			}
			infos = sup.List(r.URL.Query().Get("after"), limit)
		}
		tasks := make([]taskJSON, 0, len(infos))
		for _, ti := range infos {
			tasks = append(tasks, taskJSON{ID: ti.ID, Runs: ti.Runs, LastSeq: ti.Runs, Failures: ti.Failures,
				Consecutive: ti.ConsecutiveFailures, Status: ti.Status.String(), LastError: ti.LastError,
				MaybeDuplicate: ti.MaybeDuplicate})
		}
		out["tasks"] = tasks
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	}
}
