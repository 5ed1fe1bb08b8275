package upgrader

// The package is imported under another name: the upgrader's calls are
// fault(step, gen, attempt).
import faults "github.com/batonhq/baton/internal/fault"

// Fault injection points, for the end-to-end and reliability tests: see
// internal/fault, which names the steps, reads BATON_FAULT and, in builds
// with the batonfault tag only, makes the process fail there. Ordinary
// builds compile every call to nothing.
const (
	faultNewStart        = faults.NewStart
	faultNewListening    = faults.NewListening
	faultNewRestoring    = faults.NewRestoring
	faultNewReject       = faults.NewReject
	faultNewHang         = faults.NewHang
	faultNewCrashLate    = faults.NewCrashLate
	faultNewCrashServing = faults.NewCrashServing
	faultOldKill         = faults.OldKill

	faultOldKillAfterFreeze      = faults.OldKillAfterFreeze
	faultOldKillAfterPreCopy     = faults.OldKillAfterPreCopy
	faultOldKillAfterMiddleRound = faults.OldKillAfterMiddleRound
	faultNewPreRestoring         = faults.NewPreRestoring
	faultNewMiddleRestoring      = faults.NewMiddleRestoring
	faultNewSlowReady            = faults.NewSlowReady
	faultOldKillAfterReady       = faults.OldKillAfterReady
	faultOldKillMidDrain         = faults.OldKillMidDrain
)

// fault fails the process at step if BATON_FAULT names it for this
// generation and attempt.
func fault(step faults.Step, gen, attempt int) { faults.Inject(step, gen, attempt) }

// faultHealthFails reports whether the probation's health checks must fail.
func faultHealthFails(gen, attempt int) bool { return faults.HealthFails(gen, attempt) }

// faultRejects reports whether the state must be rejected.
func faultRejects(gen, attempt int) bool { return faults.Rejects(gen, attempt) }

// attemptNow is the number of the latest upgrade attempt, for the fault
// points reached after the attempt returned (the drain).
func (u *Upgrader) attemptNow() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.attempt
}
