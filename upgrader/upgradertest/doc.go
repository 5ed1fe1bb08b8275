// Package upgradertest checks a service built on the upgrader the way
// baton's own reliability suite checks baton-demo: it starts the service's
// real binary, puts HTTP load on it, triggers upgrades by SIGHUP (or through
// its control socket), and reports every request a client saw fail or had
// to re-send, so a test can assert that an upgrade, a failed one included,
// loses nothing. TestExampleUserTest in example_test.go is such a test in
// full.
//
// Start runs the service in a directory of its own (Options.Dir), in the
// test's environment without the variables through which a service manager
// talks to its service (CleanEnv), and reads what every generation writes
// into Service.Logs, parsed as log/slog's text format, so that a test can
// wait for a line (Logs.Wait) and read its fields. Every generation is
// stopped when the test ends.
//
// A request that Go's client had to send twice (it silently re-sends an
// idempotent request when a reused connection closes under it) is counted
// as retried: any other client would have seen an error.
//
// Faults are injected in builds with the batonfault tag: build the service
// with -tags batonfault and start it with Fault(...) in its environment to
// make a process fail at a named step of the handoff. The steps are the
// upgrader's own.
package upgradertest
