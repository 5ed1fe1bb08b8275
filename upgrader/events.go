package upgrader

// Step names one step of a process's life that others may need to tell the
// world about: the systemd integration turns them into notifications, the
// control socket streams them to `baton upgrade --wait`.
type Step string

// The steps, in the order one process emits them. An upgrade emits
// StepStarted, then StepChildStarted, StepStateSent and StepChildReady as it
// gets there (with Options.Probation, StepProbation between StepStateSent
// and StepChildReady, or StepRolledBack before StepFailed), or StepFailed; Shutdown emits StepDraining (after a successful
// upgrade) or StepStopping (otherwise). StepDone is sent by the control
// socket only, once the old process has drained. OnEvent says on which
// goroutine each is delivered and what a hook that blocks holds up.
const (
	StepReady        Step = "ready"         // Ready: this process serves
	StepStarted      Step = "started"       // Upgrade began; the new process is not started yet
	StepChildStarted Step = "child-started" // the new process said hello (Event.Pid)
	StepStateSent    Step = "state-sent"    // the snapshot was sent (Event.Bytes)
	StepProbation    Step = "probation"     // the new process serves on probation (Event.Pid); the old one stands by
	StepRolledBack   Step = "rolled-back"   // the probation failed: the old process took the service back (Event.Pid, Event.Error); StepFailed follows
	StepChildReady   Step = "child-ready"   // the new process is ready (Event.Pid); with a probation, at its end
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

// OnEvent registers f to be called with every Step of the process's life:
// StepReady, each step of an upgrade, and StepDraining or StepStopping when
// Shutdown starts. The systemd integration turns them into notifications.
//
// The hooks run synchronously, in the order they were registered, on the
// goroutine that reached the step, and the step goes on only when the last
// one has returned. (The control socket's stream to `baton upgrade --wait`
// gets each event after the hooks, the same way.) A hook registered while
// an event is being delivered sees the next one. So a hook may block, and
// what that holds up depends on the step:
//
//   - StepReady: on the goroutine that called Ready, once readiness has been
//     reported (the previous generation is draining) and the background
//     goroutines run. Blocking delays Ready's return.
//   - StepStarted: on the goroutine that called Upgrade (for the control
//     socket, the goroutine it runs the upgrade in), once the upgrade is
//     under way and before the new process is started: every StepStarted
//     hook has returned before tableflip starts it. Blocking delays the
//     start; UpgradeTimeout has not begun to run, the context passed to
//     Upgrade has. A hook may hand the new process a file here (AddFile):
//     it goes with the listeners. The systemd integration relies on this
//     order for its handover pipe, and sends RELOADING=1 before the new
//     process exists.
//   - StepChildStarted, StepStateSent: on the goroutine that serves the old
//     side of the handoff (a child-started read only after the new process
//     died is delivered on Upgrade's goroutine). Blocking delays the next
//     handoff message, so the freeze and the state transfer, while
//     UpgradeTimeout runs: a long block can make the upgrade time out.
//   - StepProbation: on the goroutine that watches the probation, once the
//     old process stopped accepting. Blocking delays the watch (a crash is
//     seen, and the service taken back, only after the hook returns).
//   - StepChildReady, StepRolledBack, StepFailed: on the goroutine that called Upgrade, once
//     the attempt has ended and before Upgrade returns. Upgrade still counts
//     as in progress: blocking delays its return, the closing of Exit (so
//     the old process's drain) after StepChildReady, and any Shutdown,
//     which waits for an upgrade in progress. The new process already
//     serves. The systemd integration relies on this: its StepChildReady
//     hook sends MAINPID= and waits for the manager's BARRIER=1 answer, so
//     that the switch has taken effect before the old process stops.
//   - StepDraining, StepStopping: on the goroutine that called Shutdown,
//     before the listeners close. Blocking delays the drain while its
//     deadline runs.
//
// A hook must therefore not wait for Upgrade, Shutdown or Close to return.
func (u *Upgrader) OnEvent(f func(Event)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.eventHooks = append(u.eventHooks, f)
}

// emit delivers e to the hooks as OnEvent describes. It holds no lock while
// a hook runs, so a hook may call the Upgrader.
func (u *Upgrader) emit(e Event) {
	u.mu.Lock()
	hooks := append([]func(Event){}, u.eventHooks...)
	u.mu.Unlock()
	for _, f := range hooks {
		f(e)
	}
}
