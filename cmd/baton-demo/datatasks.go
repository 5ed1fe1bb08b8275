package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton/worker"
)

// Tasks as data: the demo registers its kinds at start, and tasks of those
// kinds are created, read and deleted over HTTP at run time:
//
//	curl -si -XPOST 127.0.0.1:8080/tasks -d '{"id":"cust-1","kind":"demo.count","every":"1s"}'
//	curl -si -XPOST 127.0.0.1:8080/tasks -d '{"id":"cust-2","kind":"demo.count","cron":"*/5 * * * * *","tz":"Europe/Paris"}'
//	curl -s 127.0.0.1:8080/tasks/cust-1
//	curl -si -XDELETE 127.0.0.1:8080/tasks/cust-1
//
// They survive upgrades and, with -state-file, full restarts, without the
// binary registering them. -without-kind leaves a kind out of a build, to
// show how its tasks are kept as orphans until a binary with it returns.

// Kinds of the demo.
const (
	// kindCount counts its runs in its state (8 bytes, big endian).
	kindCount = "demo.count"
	// kindEcho only logs its runs, with its Args.
	kindEcho = "demo.echo"
	// kindSleep takes as long as its Args say (a Go duration, such as
	// "300ms"), then logs its run: a slow task, to try overlap policies.
	// A run cut off by its context logs nothing: it runs again.
	kindSleep = "demo.sleep"
)

// withoutKinds lists, comma-separated, kinds a build leaves out, as a
// release that lacks them would: set it with -ldflags "-X
// main.withoutKinds=demo.count". -without-kind adds to it; a flag does not
// change across an upgrade, a build does.
var withoutKinds = ""

// dataConfig is the demo's flags for tasks as data.
type dataConfig struct {
	without string // comma-separated kinds not to register
}

func (c *dataConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.without, "without-kind", "", "do not register these comma-separated task `kinds` (their tasks are kept as orphans)")
}

// registerKinds registers the demo's kinds but those left out. Each run is
// recorded in the task log, if any, as the by-ID tasks' are.
func registerKinds(sup *worker.Supervisor, c dataConfig, log *taskLog) error {
	pid := os.Getpid()
	without := strings.Split(c.without+","+withoutKinds, ",")
	kinds := []worker.Kind{
		{Name: kindCount, Version: 1, Run: func(_ context.Context, r *worker.Run) error {
			var n uint64
			if st := r.State(); len(st) == 8 {
				n = binary.BigEndian.Uint64(st)
			}
			if n != r.Seq()-1 && !r.MaybeDuplicate() {
				return fmt.Errorf("count %d in the state, but this is run %d", n, r.Seq())
			}
			if log != nil {
				log.record(r.ID(), r.Seq(), pid, time.Now())
			}
			return r.Checkpoint(binary.BigEndian.AppendUint64(nil, r.Seq()))
		}},
		{Name: kindEcho, Version: 1, Run: func(_ context.Context, r *worker.Run) error {
			if log != nil {
				log.record(r.ID(), r.Seq(), pid, time.Now())
			}
			return nil
		}},
		{Name: kindSleep, Version: 1, Run: func(ctx context.Context, r *worker.Run) error {
			d, err := time.ParseDuration(string(r.Args()))
			if err != nil {
				return fmt.Errorf("args %q: want a duration: %w", r.Args(), err)
			}
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if log != nil {
				log.record(r.ID(), r.Seq(), pid, time.Now())
			}
			return nil
		}},
	}
	for _, k := range kinds {
		if slices.Contains(without, k.Name) {
			continue
		}
		if err := sup.RegisterKind(k); err != nil {
			return err
		}
	}
	return nil
}

// taskRequest is the body of POST /tasks. Give one of every, cron and at
// (or after).
type taskRequest struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Every   string `json:"every,omitempty"` // a Go duration: "1s"
	Cron    string `json:"cron,omitempty"`  // five fields, or six with seconds
	TZ      string `json:"tz,omitempty"`    // IANA zone of cron; default UTC
	At      string `json:"at,omitempty"`    // RFC 3339: a one-off run
	After   string `json:"after,omitempty"` // a duration from now: a one-off run
	Jitter  string `json:"jitter,omitempty"`
	Timeout string `json:"timeout,omitempty"`
	Overlap string `json:"overlap,omitempty"` // queue (default), skip or allow
	// MaxConcurrent bounds the runs in flight of an overlap allow task.
	MaxConcurrent int    `json:"max_concurrent,omitempty"`
	CatchUp       int    `json:"catch_up,omitempty"`
	Start         string `json:"start,omitempty"` // RFC 3339
	End           string `json:"end,omitempty"`   // RFC 3339
	Paused        bool   `json:"paused,omitempty"`
	Args          string `json:"args,omitempty"`
}

// errBadRequest marks a request the client must fix.
var errBadRequest = errors.New("bad request")

// task turns the request into a worker.Task of a registered kind.
func (q *taskRequest) task(now time.Time) (worker.Task, error) {
	t := worker.Task{ID: q.ID, Kind: q.Kind, Cron: q.Cron, TimeZone: q.TZ, Paused: q.Paused, Args: []byte(q.Args)}
	if q.ID == "" || q.Kind == "" {
		return t, fmt.Errorf("%w: give id and kind", errBadRequest)
	}
	var err error
	dur := func(name, s string, d *time.Duration) {
		if s == "" || err != nil {
			return
		}
		if *d, err = time.ParseDuration(s); err != nil {
			err = fmt.Errorf("%w: %s: %v", errBadRequest, name, err)
		}
	}
	at := func(name, s string, tp *time.Time) {
		if s == "" || err != nil {
			return
		}
		if *tp, err = time.Parse(time.RFC3339Nano, s); err != nil {
			err = fmt.Errorf("%w: %s: want RFC 3339, such as 2026-12-03T08:00:00Z: %v", errBadRequest, name, err)
		}
	}
	var after time.Duration
	dur("every", q.Every, &t.Every)
	dur("jitter", q.Jitter, &t.Jitter)
	dur("timeout", q.Timeout, &t.Timeout)
	dur("after", q.After, &after)
	at("at", q.At, &t.At)
	at("start", q.Start, &t.Start)
	at("end", q.End, &t.End)
	if err != nil {
		return t, err
	}
	if q.After != "" {
		if q.At != "" {
			return t, fmt.Errorf("%w: give at or after, not both", errBadRequest)
		}
		t.At = now.Add(after)
	}
	switch q.Overlap {
	case "", "queue":
	case "skip":
		t.Overlap = worker.OverlapSkip
	case "allow":
		t.Overlap = worker.OverlapAllow
	default:
		return t, fmt.Errorf("%w: overlap %q: want queue, skip or allow", errBadRequest, q.Overlap)
	}
	t.MaxConcurrent = q.MaxConcurrent
	switch {
	case q.CatchUp < 0:
		t.Policy = worker.SkipMissed
	case q.CatchUp > 0:
		t.Policy, t.CatchUpLimit = worker.CatchUp, q.CatchUp
	}
	if t.Every == 0 && t.Cron == "" && t.At.IsZero() {
		return t, fmt.Errorf("%w: give one of every, cron, at and after", errBadRequest)
	}
	return t, nil
}

// taskReply is the body of GET /tasks/{id}.
type taskReply struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Schedule  string    `json:"schedule,omitempty"`
	Status    string    `json:"status"`
	Runs      uint64    `json:"runs"`
	LastSeq   uint64    `json:"last_seq"`
	Failures  uint64    `json:"failures"`
	LastError string    `json:"last_error,omitempty"`
	NextRun   time.Time `json:"next_run,omitzero"`
	LastRun   time.Time `json:"last_run,omitzero"`
	Paused    bool      `json:"paused,omitempty"`
	// InFlight counts the runs in flight of an overlap allow task.
	InFlight int `json:"in_flight,omitempty"`
	// Reason says why an orphaned task does not run.
	Reason string `json:"reason,omitempty"`
}

func replyOf(ti worker.TaskInfo) taskReply {
	return taskReply{ID: ti.ID, Kind: ti.Kind, Schedule: ti.Schedule, Status: ti.Status.String(), Runs: ti.Runs,
		LastSeq: ti.Runs, Failures: ti.Failures, LastError: ti.LastError, NextRun: ti.Next, LastRun: ti.LastRun, Paused: ti.Paused,
		InFlight: ti.InFlight}
}

// routeDataTasks adds POST /tasks, GET /tasks/{id} and DELETE /tasks/{id}.
func routeDataTasks(mux *http.ServeMux, sup *worker.Supervisor) {
	mux.HandleFunc("POST /tasks", func(w http.ResponseWriter, r *http.Request) {
		var q taskRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is not a task: " + err.Error()})
			return
		}
		t, err := q.task(time.Now())
		if err == nil {
			err = sup.Add(t)
		}
		switch {
		case err == nil:
			ti, _ := sup.Task(t.ID)
			w.Header().Set("Location", "/tasks/"+t.ID)
			writeJSON(w, http.StatusCreated, replyOf(ti))
		case errors.Is(err, worker.ErrDuplicateTask):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		case errors.Is(err, errBadRequest), errors.Is(err, worker.ErrInvalidTask):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		default: // frozen for a handoff, or stopping: the next process answers
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		}
	})
	mux.HandleFunc("GET /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if ti, ok := sup.Task(id); ok {
			writeJSON(w, http.StatusOK, replyOf(ti))
			return
		}
		for _, o := range sup.Orphans() {
			if o.ID == id {
				writeJSON(w, http.StatusOK, taskReply{ID: o.ID, Kind: o.Kind, Status: "orphaned", Runs: o.Runs, LastSeq: o.Runs, Reason: o.Reason})
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no task %q", id)})
	})
	mux.HandleFunc("DELETE /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := sup.Remove(r.PathValue("id")); errors.Is(err, worker.ErrUnknownTask) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		} else if err != nil {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
