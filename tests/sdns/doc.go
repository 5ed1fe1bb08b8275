// Package sdns boots a real systemd as PID 1 of private namespaces for
// end-to-end tests, so that a test can install a unit, start, reload and
// restart it, and read the journal, exactly as on a host, without touching
// the host.
//
// The work is done by sdns.sh (embedded; the project's copy of the recipe in
// shared/systemd-ns). Its invariant, which this package must never weaken:
// systemd runs only inside pid, mount, net, uts, ipc and cgroup namespaces
// in which every host mount is read-only, /run, /tmp, /var/tmp and the unit
// directories are private tmpfs, kernel-global sysctls are read-only,
// dangerous capabilities are dropped and only an allow-list of units exists.
// Booted any other way, systemd wipes the host's /tmp and starts host
// services. The instance's directory (Instance.Dir) is the one host path
// both sides can write; put binaries there (BuildGo, Install).
//
// Boot skips the test where that is impossible (not root, inside a user
// namespace, tools missing, no cgroup2); with BATON_SDNS_REQUIRE=1 in the
// environment (CI, which runs as root) it fails instead. Every instance is
// stopped by t.Cleanup, and, should the test process die first, by a
// watcher that notices within about a second (SDNS_OWNER_PID).
//
// Helpers that take a testing.TB fail the test with t.Fatal: call them from
// the test's goroutine only.
//
// hostcheck.sh in this directory runs a command (say, go test ./tests/...)
// between two snapshots of the host and fails if anything sdns could touch
// changed: sysctls, mounts, links, cgroups, /tmp and /var/tmp, processes,
// system files.
package sdns
