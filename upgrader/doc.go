// Package upgrader upgrades a running service in place: on a trigger it
// starts the binary now found at the process's own path, hands it every
// listening socket and, through a state.Registry, the state of its
// components, waits until the new process reports ready, and only then lets
// the old process stop accepting, drain the connections it already accepted
// and exit.
//
// # Invariant
//
// It is built on github.com/cloudflare/tableflip, which passes the sockets
// and the readiness byte. The invariant is tableflip's, extended to state: at
// any time there are one or two processes, at most one of them not ready,
// and exactly one of them owns the components' state. Ownership moves to the
// new process only when it is ready; until then a failed upgrade (the new
// process exits, hangs past Options.UpgradeTimeout, rejects the state) leaves
// the old process serving with everything it had. In a new process the
// servers given to Serve accept only once it is ready; in the old one the
// listeners close when Shutdown starts.
//
// With Options.Probation the upgrade becomes final only at the end of the
// probation, OTP's point of no return: the new process serves but keeps its
// participants frozen, and the old one stops accepting but keeps its
// sockets open, its frozen state and the snapshot, and watches the new
// process. Ownership of the state moves at the commit; until then a new
// process that dies or fails Options.HealthCheck is rolled back and the old
// process serves again with everything it had (ErrRolledBack).
//
// A participant with state.Participant.PreCopy moves in rounds, so that the
// pause of background work does not grow with its state: a first full copy
// goes to the new process while the old one runs, then, while the rounds
// shrink, what changed during the round before, and only what changed
// since the last of them goes after the freeze (upgrader/PROTOCOL.md,
// "Pre-copy"). Without such a participant the handoff is one round, as
// before.
//
// # Lifecycle
//
// One Upgrader exists per process (tableflip allows no second one):
//
//  1. New. In a process started by an upgrade it takes the handoff from the
//     previous generation.
//  2. Listen and ListenPacket for every socket (AdoptListener first for one
//     from systemd); Serve each *http.Server, OnShutdown for other servers;
//     register participants on State.
//  3. Restore (or let Ready call it): the state from the previous
//     generation, or from Options.StateFile in a first start.
//  4. Ready: the service is up. In a new process this completes the upgrade
//     and the old process starts to drain.
//  5. Upgrade on each trigger. When Exit is closed a new process has taken
//     over.
//  6. Shutdown (graceful: stop accepting, drain, then return) or Close (at
//     once), then exit. Both are idempotent and join every goroutine the
//     Upgrader started; neither can be undone.
//
// Methods are safe for concurrent use. Upgrade runs one attempt at a time
// and refuses the others (ErrUpgradeInProgress, ErrParentRunning, ...);
// errors.go lists the errors, and a failed attempt is an *UpgradeError.
//
// # What crosses the process boundary
//
// The new process learns that it was started by an upgrade from
// BATON_HANDOFF, which Upgrade sets in this process's environment for the
// attempt (tableflip gives the child os.Environ) and New removes. The handoff
// runs over a socket pair passed as a named file; with
// Options.ControlSocket, the baton command talks to the service over a Unix
// socket. Both are written down in upgrader/PROTOCOL.md, the snapshot in
// state/PROTOCOL.md.
//
// # Telling the world
//
// OnEvent hooks see each Step of the process's life, synchronously; the
// systemd integration is built on them. Counters count across generations
// exactly; with Options.Registerer the upgrader's metrics are registered
// there.
//
// The package installs no signal handlers and never exits the process: the
// caller wires SIGHUP (or any other trigger) to Upgrade and exits after
// Shutdown returns.
package upgrader
