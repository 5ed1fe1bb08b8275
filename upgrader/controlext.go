package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"
)

// Commands added to the control socket by the service (HandleControl), such
// as the task supervisor's "tasks.list" and "tasks.pause". They are
// answered on the same socket, after the same peer check, in the same
// protocol: the request line carries the command's arguments in "args",
// the one reply line its answer in "data" (type ReplyData) or an error.

// ReplyData is the type of the reply line that carries an added command's
// answer, in its "data" field.
const ReplyData = "data"

// Codes of errors an added command's handler returns in a ControlError.
const (
	CodeNotFound = "not_found" // the command names something that does not exist
	CodeFailed   = "failed"    // the command was understood and could not be done
)

// controlHandlerTimeout bounds an added command's handler.
const controlHandlerTimeout = 10 * time.Second

// A ControlHandler answers an added command: args is the request's "args"
// field (null when absent), the returned value goes, as JSON, in the
// reply's "data". An error is answered with its message and the code of a
// ControlError it wraps, or CodeFailed. ctx ends after 10 seconds.
type ControlHandler func(ctx context.Context, args json.RawMessage) (any, error)

// A ControlError is a handler's error with the code its reply carries:
// CodeBadRequest, CodeNotFound, CodeBusy or CodeFailed.
type ControlError struct {
	Code string
	Err  error
}

// Error returns the wrapped error's message.
func (e *ControlError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *ControlError) Unwrap() error { return e.Err }

// ControlDataReply is the reply line of an added command: a ControlReply
// with its answer.
type ControlDataReply struct {
	ControlReply
	Data json.RawMessage `json:"data,omitempty"`
}

// controlExtRequest is what an added command's request line holds.
type controlExtRequest struct {
	Version int             `json:"v"`
	Command string          `json:"cmd"`
	Args    json.RawMessage `json:"args,omitempty"`
}

// HandleControl adds command to those the control socket answers. The
// name is the service's own, such as "tasks.list"; status, upgrade and a
// name already added are refused. Add commands before Ready, so that
// every generation answers the same ones; adding one later works too.
func (u *Upgrader) HandleControl(command string, h ControlHandler) error {
	if command == "" || command == CommandStatus || command == CommandUpgrade || h == nil {
		return fmt.Errorf("upgrader: control command %q is reserved, empty or without a handler", command)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, dup := u.controlCommands[command]; dup {
		return fmt.Errorf("upgrader: control command %q added twice", command)
	}
	if u.controlCommands == nil {
		u.controlCommands = make(map[string]ControlHandler)
	}
	u.controlCommands[command] = h
	return nil
}

// ControlCommands returns the names of the added commands, sorted.
func (u *Upgrader) ControlCommands() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.controlCommands))
	for name := range u.controlCommands {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// serveAddedCommand answers line if it is a request for an added command
// at this protocol version, and reports whether it did; other lines are
// parseControlRequest's. The peer was checked before the line was read.
func (u *Upgrader) serveAddedCommand(c net.Conn, line []byte) bool {
	var req controlExtRequest
	if json.Unmarshal(line, &req) != nil || req.Version != ControlVersion {
		return false
	}
	u.mu.Lock()
	h := u.controlCommands[req.Command]
	u.mu.Unlock()
	if h == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlHandlerTimeout)
	defer cancel()
	r := ControlDataReply{ControlReply: ControlReply{Version: ControlVersion, Pid: os.Getpid(), Type: ReplyData}}
	v, err := h(ctx, req.Args)
	if err == nil {
		if r.Data, err = json.Marshal(v); err != nil {
			err = fmt.Errorf("encode the answer: %w", err)
		}
	}
	if err != nil {
		r.Type, r.Code, r.Error, r.Data = ReplyError, CodeFailed, err.Error(), nil
		if ce, ok := errors.AsType[*ControlError](err); ok {
			r.Code = ce.Code
		}
	}
	c.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	if err := json.NewEncoder(c).Encode(r); err != nil {
		u.log.Warn("control: reply not taken", "cmd", req.Command, "err", err)
	}
	return true
}
