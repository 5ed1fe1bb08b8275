package upgrader

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// The control protocol's messages, as upgrader/PROTOCOL.md writes them down.

// ControlVersion is the control protocol's version: the "v" field of every
// request and reply. A request of another version is answered with
// CodeVersion.
const ControlVersion = 1

// maxControlRequest bounds a request line.
const maxControlRequest = 64 << 10

// Deadlines of a control connection, so that no client, silent or not
// reading, holds a goroutine of the control server, and so the process's
// exit, for longer.
const (
	controlReadTimeout  = 10 * time.Second // to send the request line
	controlWriteTimeout = 5 * time.Second  // to take each reply line
)

// Commands of a ControlRequest.
const (
	CommandStatus  = "status"  // reply: one ReplyStatus
	CommandUpgrade = "upgrade" // reply: ReplyEvent lines if Wait, then ReplyResult or ReplyError
)

// Types of a ControlReply: what the line carries.
const (
	ReplyEvent  = "event"  // Event: one step of an upgrade, with Wait
	ReplyStatus = "status" // Status: the answer to CommandStatus
	ReplyResult = "result" // Result: the upgrade started (no Wait) or succeeded (Wait)
	ReplyError  = "error"  // Code and Error: the request failed
)

// Codes of a ControlReply of type ReplyError.
const (
	CodeBadRequest    = "bad_request"    // the request is not one this service accepts
	CodeVersion       = "version"        // the request speaks another ControlVersion
	CodeForbidden     = "forbidden"      // the client's user may not control this service
	CodeBusy          = "busy"           // not now: not ready, upgrading, on probation, upgraded, or the previous generation still drains
	CodeUpgradeFailed = "upgrade_failed" // the upgrade was tried and failed; the old process serves on
	CodeRolledBack    = "rolled_back"    // the new process was ready but died or failed its health check during the probation; the old process took the service back
)

// ControlRequest is a request on the control socket.
type ControlRequest struct {
	Version int    `json:"v"`
	Command string `json:"cmd"` // CommandStatus or CommandUpgrade
	// Wait, for CommandUpgrade, streams the steps and answers once the upgrade
	// succeeded (the old process drained) or failed.
	Wait bool `json:"wait,omitempty"`
	// TimeoutMillis bounds the upgrade; zero means the upgrader's
	// UpgradeTimeout plus Probation plus DrainTimeout.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
}

// ControlReply is one line of a reply on the control socket.
type ControlReply struct {
	Version int    `json:"v"`
	Type    string `json:"type"` // ReplyEvent, ReplyStatus, ReplyResult or ReplyError
	// Pid is the pid of the process that answered. (SO_PEERCRED cannot
	// tell a client: on a socket handed between generations it names the
	// process that first called listen.)
	Pid    int     `json:"pid"`
	Event  *Event  `json:"event,omitempty"`
	Status *Status `json:"status,omitempty"`
	Result *Result `json:"result,omitempty"`
	// Code classifies an error: one of the Code constants.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// maxControlTimeoutMillis is the largest timeout_ms that fits a
// time.Duration.
const maxControlTimeoutMillis = int64(math.MaxInt64 / time.Millisecond)

// parseControlRequest parses one request line. A request it accepts has
// this protocol version, a known command and a timeout that fits a
// time.Duration; otherwise it returns the reply's error code
// (CodeBadRequest or CodeVersion) and what is wrong.
func parseControlRequest(line []byte) (ControlRequest, string, error) {
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("request is not JSON: %v", err)
	}
	if req.Version != ControlVersion {
		return ControlRequest{}, CodeVersion, fmt.Errorf("protocol version %d; this service speaks %d", req.Version, ControlVersion)
	}
	if req.Command != CommandStatus && req.Command != CommandUpgrade {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("unknown command %q: want status or upgrade", req.Command)
	}
	if req.TimeoutMillis < 0 || req.TimeoutMillis > maxControlTimeoutMillis {
		return ControlRequest{}, CodeBadRequest, fmt.Errorf("timeout_ms %d out of range 0 to %d", req.TimeoutMillis, maxControlTimeoutMillis)
	}
	return req, "", nil
}
