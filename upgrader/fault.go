package upgrader

// Fault injection points. In a build with the batonfault tag, setting
// BATON_FAULT=step@gen.attempt makes the process of generation gen fail at
// step during the attempt that started it (for new-process steps) or that it
// runs (for old-process steps): the end-to-end and reliability tests use it
// to exercise the real code paths. Ordinary builds compile every call to
// nothing.
const (
	faultNewStart     = "new-start"      // new process: exit before saying hello
	faultNewListening = "new-listening"  // new process: exit after taking its listeners
	faultNewRestoring = "new-restoring"  // new process: exit in the middle of receiving state
	faultNewReject    = "new-reject"     // new process: reject the state
	faultNewHang      = "new-hang"       // new process: restore, then hang before ready
	faultNewCrashLate = "new-crash-late" // new process: become ready, then crash during the old one's drain
	faultOldKill      = "old-kill"       // old process: SIGKILL itself after freezing, before the child is ready
)
