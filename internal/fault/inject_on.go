//go:build batonfault

package fault

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Inject fails the process at step if BATON_FAULT names it for generation
// gen and attempt: it exits, hangs or kills itself as the step says, and
// returns only for NewReject (see Rejects), NewSlowReady, NewCrashServing
// (which exits later) or when no fault is named.
func Inject(step Step, gen, attempt int) {
	if !Has(os.Getenv(EnvVar), step, gen, attempt) {
		return
	}
	fmt.Fprintf(os.Stderr, "baton fault injected: %s pid=%d\n", point(step, gen, attempt), os.Getpid())
	switch step {
	case NewHang:
		select {}
	case NewCrashLate:
		time.Sleep(20 * time.Millisecond)
		os.Exit(7)
	case NewCrashServing:
		// Returns at once: the process serves until the timer fires.
		time.AfterFunc(Delay(os.Getenv(DelayEnv)), func() {
			fmt.Fprintf(os.Stderr, "baton fault: crashing now: %s pid=%d\n", point(step, gen, attempt), os.Getpid())
			os.Exit(7)
		})
	case OldKill, OldKillAfterPreCopy, OldKillAfterMiddleRound, OldKillAfterFreeze, OldKillAfterReady, OldKillMidDrain, OldKillMidCapture:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case NewSlowReady:
		time.Sleep(time.Second)
	case NewReject:
		return
	case PanicFreeze, PanicThaw, PanicCapture, PanicRestore:
		var m map[string]int
		m[string(step)]++ // panics: assignment to entry in nil map
		return
	default:
		os.Exit(7)
	}
}

// Rejects reports whether the new process of generation gen must reject
// the state in attempt (NewReject).
func Rejects(gen, attempt int) bool {
	return Has(os.Getenv(EnvVar), NewReject, gen, attempt)
}

// HealthFails reports whether the health checks of the old process of
// generation gen must fail during the probation of attempt (HealthCheckFails).
func HealthFails(gen, attempt int) bool {
	return Has(os.Getenv(EnvVar), HealthCheckFails, gen, attempt)
}
