// Package upgrader upgrades a running service in place: on a trigger it
// starts the binary now found at the process's own path, hands it every
// listening socket and, through a state.Registry, the state of its
// components, waits until the new process reports ready, and only then stops
// accepting, drains the connections it already accepted and lets the caller
// exit.
//
// It is built on github.com/cloudflare/tableflip, which passes the sockets
// and the readiness byte. The invariant is tableflip's, extended to state: at
// any time there are one or two processes, at most one of them not ready, and
// exactly one of them owns the listeners' accept loop and the components'
// state. Ownership moves to the new process only when it is ready; until then
// a failed upgrade leaves the old process serving with everything it had.
//
// The package installs no signal handlers and never exits the process: the
// caller wires SIGHUP (or any other trigger) to Upgrade and exits after
// Shutdown returns.
package upgrader
