package upgrader

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Upgrader. Upgrade wraps the reason in an *UpgradeError;
// test for these with errors.Is.
var (
	// ErrNotReady means Upgrade was called before Ready: a process that has
	// not finished starting cannot hand anything on.
	ErrNotReady = errors.New("upgrader: process is not ready")
	// ErrUpgradeInProgress means another upgrade is running. The second
	// trigger changes nothing.
	ErrUpgradeInProgress = errors.New("upgrader: upgrade already in progress")
	// ErrUpgraded means this process has already handed over to a new one
	// and is draining.
	ErrUpgraded = errors.New("upgrader: process has already been upgraded")
	// ErrParentRunning means the previous generation has not exited yet, so
	// a third process cannot be started. Retry once it has drained.
	ErrParentRunning = errors.New("upgrader: previous generation is still draining")
	// ErrProbation means a trigger came while the previous upgrade is on
	// probation (Options.Probation): the old process may still take the
	// service back, so no third process is started. Retry once the
	// probation has ended (the old process has exited) or the upgrade was
	// rolled back.
	ErrProbation = errors.New("upgrader: the previous upgrade is on probation: retry when it has ended")
	// ErrClosed means the upgrader was shut down or closed.
	ErrClosed = errors.New("upgrader: closed")
	// ErrControlSocket means the control socket cannot be created at
	// Options.ControlSocket: its directory is open to other users, the
	// path holds something that is not a stale socket, or another process
	// serves it. Nothing at the path was changed; the error says what to
	// do.
	ErrControlSocket = errors.New("upgrader: control socket refused")
	// ErrControlServer means DialControl refused a control socket served
	// by a process of another user than the caller's or root: whoever could
	// create the path first would otherwise receive the commands.
	ErrControlServer = errors.New("upgrader: control socket served by another user; refusing to talk to it")
	// ErrStateFile means the state file could not be written. From
	// Shutdown it means the state of this run is lost (the previous file,
	// if any, is left as it was): the process should exit with a failure
	// status so that its supervisor and operator learn it. The error says
	// why: fix that (the directory, the space, a participant's Freeze).
	ErrStateFile = errors.New("upgrader: state file not written")

	// ErrStartFailed means the new binary could not be started.
	ErrStartFailed = errors.New("upgrader: new process could not be started")
	// ErrChildExited means the new process exited before it was ready.
	ErrChildExited = errors.New("upgrader: new process exited before it was ready")
	// ErrReadyTimeout means the new process did not report ready within the
	// upgrade timeout; it was killed.
	ErrReadyTimeout = errors.New("upgrader: new process was not ready in time")
	// ErrStateRejected means the new process could not read the state this
	// one would hand over, or failed to restore it.
	ErrStateRejected = errors.New("upgrader: new process rejected the state")
	// ErrRolledBack means the new process reported ready but exited, was
	// killed or failed Options.HealthCheck before its probation ended: this
	// process took the service back (it accepts again, its participants
	// thawed). The UpgradeError's Step is "probation"; its ExitStatus says
	// how the new process ended.
	ErrRolledBack = errors.New("upgrader: rolled back during the probation")
	// ErrHealthCheck means Options.HealthCheck failed during a probation;
	// the new process was killed. It comes wrapped with ErrRolledBack.
	ErrHealthCheck = errors.New("upgrader: health check failed")
	// ErrHandshake means the new process spoke a handshake this one does not
	// understand.
	ErrHandshake = errors.New("upgrader: handshake failed")
)

// An UpgradeError says why an upgrade failed. Err is one of the sentinel
// errors above, possibly wrapping the underlying cause.
type UpgradeError struct {
	// Pid is the new process's pid, or 0 if it never said hello.
	Pid int
	// Step is the last step the upgrade reached: "start", "hello",
	// "state", "ready", or "probation" (rolled back, ErrRolledBack).
	Step string
	// ExitStatus is how the new process ended when Err is ErrChildExited
	// or ErrRolledBack: "exit status 3", "signal: killed". Empty otherwise.
	ExitStatus string
	// Elapsed is the time from the trigger to the failure.
	Elapsed time.Duration
	// Err is the reason.
	Err error
}

// Error says at which step the upgrade failed, the new process's pid if it
// had one, the reason and, for a new process that exited, how.
func (e *UpgradeError) Error() string {
	msg := "upgrade failed at " + e.Step
	if e.Pid != 0 {
		msg += fmt.Sprintf(" (new pid %d)", e.Pid)
	}
	msg += ": " + e.Err.Error()
	if e.ExitStatus != "" {
		msg += ": " + e.ExitStatus
	}
	return msg
}

// Unwrap returns the reason, so errors.Is(err, ErrReadyTimeout) works.
func (e *UpgradeError) Unwrap() error { return e.Err }

// ErrStateFileDir means Options.StateFile lies in a directory that does not
// exist, is not a directory or cannot be written: New refuses it at start
// rather than lose the state at the stop.
var ErrStateFileDir = errors.New("upgrader: state file directory unusable")

// ErrUpgradeCalledOff is what Ready returns in a new process whose previous
// generation called the upgrade off (its caller's deadline passed) before
// this process was ready: it must exit; the previous generation serves.
var ErrUpgradeCalledOff = errors.New("upgrader: the upgrade was called off before this process was ready")

// ErrListenerTaken is returned by Listen and ListenPacket for a network and
// address this process already listens on through the upgrader. A socket is
// handed to the next process under its network and address, so two of them
// could not be told apart (two "127.0.0.1:0" listeners would be mixed up):
// give each listener an address of its own.
var ErrListenerTaken = errors.New("upgrader: this network and address already have a listener; give each listener an address of its own")
