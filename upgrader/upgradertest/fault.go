package upgradertest

import (
	"time"

	"github.com/batonhq/baton/internal/fault"
)

// FaultStep is a step of the handoff at which a process built with -tags
// batonfault can be made to fail, for Fault.
type FaultStep = fault.Step

// Fault injection steps, for Fault, in the order an upgrade reaches them.
// They are the upgrader's own (internal/fault), not copies.
const (
	FaultNewStart         = fault.NewStart         // the new process exits (status 7) before it says hello
	FaultNewListening     = fault.NewListening     // the new process exits after taking its listeners
	FaultNewRestoring     = fault.NewRestoring     // the new process exits while it receives the state
	FaultNewReject        = fault.NewReject        // the new process rejects the state it received
	FaultNewHang          = fault.NewHang          // the new process restores the state, then hangs before it is ready
	FaultNewCrashLate     = fault.NewCrashLate     // the new process becomes ready, then crashes during the old one's drain
	FaultNewCrashServing  = fault.NewCrashServing  // the new process serves, then crashes FaultDelayEnv after its ready (default 20 ms)
	FaultHealthCheckFails = fault.HealthCheckFails // the old process's health checks fail during the probation: it kills the new process and takes the service back
	FaultOldKill          = fault.OldKill          // the old process kills itself right after sending the state, before the new one is ready

	FaultOldKillAfterFreeze = fault.OldKillAfterFreeze // the old process kills itself once frozen, before it sends the state

	FaultNewPreRestoring     = fault.NewPreRestoring     // the new process exits (status 7) while it receives the first round of a pre-copy
	FaultOldKillAfterPreCopy = fault.OldKillAfterPreCopy // the old process kills itself once it sent the first round of a pre-copy, before it freezes

	FaultNewMiddleRestoring      = fault.NewMiddleRestoring      // the new process exits (status 7) while it receives the first middle round of a pre-copy
	FaultOldKillAfterMiddleRound = fault.OldKillAfterMiddleRound // the old process kills itself once it sent a middle round of a pre-copy, before it freezes
	FaultNewSlowReady            = fault.NewSlowReady            // the new process waits 1 s before it asks to become ready
	FaultOldKillAfterReady       = fault.OldKillAfterReady       // the old process kills itself once the new one is ready
	FaultOldKillMidDrain         = fault.OldKillMidDrain         // the old process kills itself in the middle of its drain
	FaultOldKillMidCapture       = fault.OldKillMidCapture       // the old process kills itself while a participant's Capture runs (the service injects it)

	// A participant callback of the service's own state panics, in the
	// nth call (Fault's attempt) of that generation; the service calls
	// the injection point itself (baton-demo does in demo.kv).
	FaultPanicFreeze  = fault.PanicFreeze
	FaultPanicThaw    = fault.PanicThaw
	FaultPanicCapture = fault.PanicCapture
	FaultPanicRestore = fault.PanicRestore
)

// FaultDelayEnv is the environment variable that sets how long after its
// ready a process with FaultNewCrashServing crashes: FaultDelay's entry.
const FaultDelayEnv = fault.DelayEnv

// FaultDelay returns the environment entry that makes FaultNewCrashServing
// crash d after the new process's ready, such as "BATON_FAULT_DELAY=300ms".
func FaultDelay(d time.Duration) string { return FaultDelayEnv + "=" + d.String() }

// Fault returns the environment entry that makes generation gen fail at
// step during attempt (the attempt of the old process that started it, or
// that it runs), such as "BATON_FAULT=new-reject@1.1". The service must be
// built with -tags batonfault.
func Fault(step FaultStep, gen, attempt int) string {
	return fault.Env(step, gen, attempt)
}
