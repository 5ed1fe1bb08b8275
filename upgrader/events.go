package upgrader

// Step names one step of a process's life that others may need to tell the
// world about: the systemd integration turns them into notifications, the
// control socket streams them to `baton upgrade --wait`.
type Step string

// The steps, in the order one process emits them. An upgrade emits
// StepStarted, then StepChildStarted, StepStateSent and StepChildReady as it
// gets there, or StepFailed; Shutdown emits StepDraining (after a successful
// upgrade) or StepStopping (otherwise). StepDone is sent by the control
// socket only, once the old process has drained.
const (
	StepReady        Step = "ready"         // Ready: this process serves
	StepStarted      Step = "started"       // Upgrade began; the new process is not started yet
	StepChildStarted Step = "child-started" // the new process said hello (Event.Pid)
	StepStateSent    Step = "state-sent"    // the snapshot was sent (Event.Bytes)
	StepChildReady   Step = "child-ready"   // the new process is ready (Event.Pid)
	StepFailed       Step = "failed"        // the upgrade failed (Event.Error)
	StepDraining     Step = "draining"      // Shutdown after an upgrade: draining for the new process
	StepStopping     Step = "stopping"      // Shutdown without an upgrade: the service stops
	StepDone         Step = "done"          // control socket only: the old process drained
)

// Event is one step of the process's life, as OnEvent hooks see it and the
// control socket streams it.
type Event struct {
	Step  Step   `json:"step"`
	Pid   int    `json:"pid,omitempty"`
	Bytes int64  `json:"bytes,omitempty"`
	Error string `json:"error,omitempty"`
}

// OnEvent registers f to be called with every step of the process's life
// that others may need to tell the world about: "ready", each step of an
// upgrade ("started", "child-started", "state-sent", "child-ready",
// "failed"), and "draining" or "stopping" when Shutdown starts. The systemd
// integration uses it. f must not block.
func (u *Upgrader) OnEvent(f func(Event)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.eventHooks = append(u.eventHooks, f)
}

func (u *Upgrader) emit(e Event) {
	u.mu.Lock()
	hooks := append([]func(Event){}, u.eventHooks...)
	u.mu.Unlock()
	for _, f := range hooks {
		f(e)
	}
}
