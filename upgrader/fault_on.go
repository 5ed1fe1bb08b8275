//go:build batonfault

package upgrader

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// fault fails the process at step if BATON_FAULT names it for this
// generation and attempt. Only test builds contain this.
func fault(step string, gen, attempt int) {
	want := fmt.Sprintf("%s@%d.%d", step, gen, attempt)
	for _, f := range strings.Split(os.Getenv("BATON_FAULT"), ",") {
		if f != want {
			continue
		}
		fmt.Fprintf(os.Stderr, "baton fault injected: %s pid=%d\n", want, os.Getpid())
		switch step {
		case faultNewHang:
			select {}
		case faultNewCrashLate:
			time.Sleep(20 * time.Millisecond)
			os.Exit(7)
		case faultOldKill:
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case faultNewReject:
			return
		default:
			os.Exit(7)
		}
	}
}

// faultRejects reports whether the state must be rejected.
func faultRejects(gen, attempt int) bool {
	want := fmt.Sprintf("%s@%d.%d", faultNewReject, gen, attempt)
	for _, f := range strings.Split(os.Getenv("BATON_FAULT"), ",") {
		if f == want {
			return true
		}
	}
	return false
}
