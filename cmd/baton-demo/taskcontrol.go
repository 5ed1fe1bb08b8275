package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/batonhq/baton/upgrader"
	"github.com/batonhq/baton/worker"
)

// The tasks on the control socket, for `baton tasks`: tasks.list (with
// filters) and tasks.pause, tasks.resume, tasks.run-now of one ID. They are
// answered after the control socket's peer check, as upgrade is.

// taskListArgs are tasks.list's filters; empty ones match all.
type taskListArgs struct {
	Kind    string `json:"kind,omitempty"`
	State   string `json:"state,omitempty"`   // a status (idle, running, paused...) or orphaned
	Orphans bool   `json:"orphans,omitempty"` // only the orphans
}

// taskListReply is tasks.list's answer.
type taskListReply struct {
	Tasks   []worker.TaskInfo   `json:"tasks"`
	Orphans []worker.OrphanInfo `json:"orphans"`
}

// taskIDArgs names the task of tasks.pause, tasks.resume and tasks.run-now.
type taskIDArgs struct {
	ID string `json:"id"`
}

// registerTaskControl adds the tasks commands to u's control socket.
func registerTaskControl(u *upgrader.Upgrader, sup *worker.Supervisor) error {
	if err := u.HandleControl("tasks.list", func(_ context.Context, raw json.RawMessage) (any, error) {
		var a taskListArgs
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		return listTasks(sup, a), nil
	}); err != nil {
		return err
	}
	for name, f := range map[string]func(string) error{
		"tasks.pause": sup.Pause, "tasks.resume": sup.Resume, "tasks.run-now": sup.RunNow,
	} {
		err := u.HandleControl(name, func(_ context.Context, raw json.RawMessage) (any, error) {
			var a taskIDArgs
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			if err := f(a.ID); err != nil {
				return nil, controlError(err)
			}
			ti, _ := sup.Task(a.ID)
			return ti, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &upgrader.ControlError{Code: upgrader.CodeBadRequest, Err: fmt.Errorf("args: %w", err)}
	}
	return nil
}

// controlError gives a supervisor's error its reply code.
func controlError(err error) error {
	switch {
	case errors.Is(err, worker.ErrUnknownTask):
		return &upgrader.ControlError{Code: upgrader.CodeNotFound, Err: err}
	case errors.Is(err, worker.ErrOrphan), errors.Is(err, worker.ErrClosed), errors.Is(err, worker.ErrFrozen):
		return &upgrader.ControlError{Code: upgrader.CodeBusy, Err: err}
	case errors.Is(err, worker.ErrInvalidTask):
		return &upgrader.ControlError{Code: upgrader.CodeBadRequest, Err: err}
	}
	return err
}

// listTasks pages through every task, keeping those that match a.
func listTasks(sup *worker.Supervisor, a taskListArgs) taskListReply {
	out := taskListReply{Tasks: []worker.TaskInfo{}, Orphans: []worker.OrphanInfo{}}
	if !a.Orphans && a.State != "orphaned" {
		for after := ""; ; {
			page := sup.List(after, 1000)
			for _, ti := range page {
				if (a.Kind == "" || ti.Kind == a.Kind) && (a.State == "" || ti.Status.String() == a.State) {
					out.Tasks = append(out.Tasks, ti)
				}
			}
			if len(page) < 1000 {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	if a.State == "" || a.State == "orphaned" {
		for _, o := range sup.Orphans() {
			if a.Kind == "" || o.Kind == a.Kind {
				out.Orphans = append(out.Orphans, o)
			}
		}
	}
	return out
}
