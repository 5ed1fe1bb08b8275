// Package fault names the points at which a baton process can be made to
// fail on purpose, and fails it there. In a build with the batonfault tag,
// the environment variable BATON_FAULT=step@gen.attempt[,...] makes the
// process of generation gen fail at step during attempt: the attempt of the
// old process that started it (for the new-process steps) or that it runs
// (for old-kill). The end-to-end and reliability tests use it to exercise
// the real code paths. In every other build Inject and Rejects compile to
// nothing, whatever the environment says.
//
// The upgrader calls it; upgradertest re-exports the step names for users'
// tests.
package fault

import (
	"fmt"
	"strings"
	"time"
)

// Step is a point at which a process can be made to fail.
type Step string

// The steps, in the order an upgrade reaches them.
const (
	// NewStart: the new process exits (status 7) before it says hello.
	NewStart Step = "new-start"
	// NewListening: the new process exits after taking its listeners.
	NewListening Step = "new-listening"
	// NewPreRestoring: the new process exits (status 7) while it receives
	// the first round of a pre-copy handoff, the old process running.
	NewPreRestoring Step = "new-pre-restoring"
	// NewMiddleRestoring: the new process exits (status 7) while it
	// receives the first middle round of a pre-copy handoff, the first
	// round restored, the old process running.
	NewMiddleRestoring Step = "new-middle-restoring"
	// NewRestoring: the new process exits while it receives the state.
	NewRestoring Step = "new-restoring"
	// NewReject: the new process rejects the state it received.
	NewReject Step = "new-reject"
	// NewHang: the new process restores the state, then hangs before
	// it is ready.
	NewHang Step = "new-hang"
	// NewSlowReady: the new process restores the state, then waits one
	// second before it asks to become ready, so that a test can put the
	// caller's deadline on either side of its ready.
	NewSlowReady Step = "new-slow-ready"
	// NewCrashLate: the new process becomes ready, then crashes (status
	// 7) during the old one's drain.
	NewCrashLate Step = "new-crash-late"
	// NewCrashServing: the new process becomes ready and serves, then
	// crashes (status 7) DelayEnv after it opened its servers (default
	// 20 ms), whatever it is doing: the release that dies under load
	// during the old process's probation.
	NewCrashServing Step = "new-crash-serving"
	// HealthCheckFails: the old process's health check of its new process
	// fails during the probation (Options.HealthCheck is called, and its
	// answer replaced by a failure), so that the old process kills the
	// new one and takes the service back. It names the old process's
	// generation and attempt, like OldKill.
	HealthCheckFails Step = "health-check-fails"
	// OldKillAfterPreCopy: the old process kills itself (SIGKILL) once it
	// has sent the first round of a pre-copy handoff, before it freezes.
	OldKillAfterPreCopy Step = "old-kill-after-pre-copy"
	// OldKillAfterMiddleRound: the old process kills itself (SIGKILL) once
	// it has sent a middle round of a pre-copy handoff, before it freezes.
	OldKillAfterMiddleRound Step = "old-kill-after-middle-round"
	// OldKillAfterFreeze: the old process kills itself (SIGKILL) once it
	// has frozen its participants, before it sends anything of the state.
	OldKillAfterFreeze Step = "old-kill-after-freeze"
	// OldKill: the old process kills itself (SIGKILL) right after it has
	// sent the state, its tasks frozen, before the new process is ready.
	OldKill Step = "old-kill"
	// OldKillAfterReady: the old process kills itself once the new one
	// is ready, before it starts to drain.
	OldKillAfterReady Step = "old-kill-after-ready"
	// OldKillMidDrain: the old process kills itself in the middle of its
	// drain, its listeners closed, its requests in flight.
	OldKillMidDrain Step = "old-kill-mid-drain"
	// OldKillMidCapture: the old process kills itself in the middle of
	// capturing its state, as a participant's Capture runs (injected by
	// the service, like the panics below: baton-demo's demo.kv).
	OldKillMidCapture Step = "old-kill-mid-capture"

	// The participant callbacks of an application's own state panic (a
	// nil-map write, as a real bug would), for the tests of a panic in
	// user code in either process. Unlike the steps above they count calls,
	// not attempts: step@gen.n makes the nth call of that callback in
	// generation gen panic, except PanicRestore, which names the attempt
	// like the new-process steps. baton-demo injects them in demo.kv.
	PanicFreeze  Step = "panic-freeze"
	PanicThaw    Step = "panic-thaw"
	PanicCapture Step = "panic-capture"
	PanicRestore Step = "panic-restore"
)

// EnvVar is the environment variable that names the faults to inject.
const EnvVar = "BATON_FAULT"

// DelayEnv is the environment variable that sets the delay of
// NewCrashServing, as a time.ParseDuration string ("300ms").
const DelayEnv = "BATON_FAULT_DELAY"

// DefaultDelay is NewCrashServing's delay when DelayEnv is unset or bad.
const DefaultDelay = 20 * time.Millisecond

// Delay returns NewCrashServing's delay: DelayEnv's value as it is passed
// in env (os.Getenv(DelayEnv)), else DefaultDelay.
func Delay(env string) time.Duration {
	if d, err := time.ParseDuration(env); err == nil && d >= 0 {
		return d
	}
	return DefaultDelay
}

// Env returns the environment entry that makes generation gen fail at step
// during attempt, such as "BATON_FAULT=new-reject@1.1".
func Env(step Step, gen, attempt int) string {
	return EnvVar + "=" + point(step, gen, attempt)
}

func point(step Step, gen, attempt int) string {
	return fmt.Sprintf("%s@%d.%d", step, gen, attempt)
}

// Has reports whether value, a BATON_FAULT value (a comma-separated list
// of step@gen.attempt), names step for generation gen and attempt.
func Has(value string, step Step, gen, attempt int) bool {
	want := point(step, gen, attempt)
	for _, f := range strings.Split(value, ",") {
		if f == want {
			return true
		}
	}
	return false
}
