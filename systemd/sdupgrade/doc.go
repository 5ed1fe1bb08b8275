// Package sdupgrade makes a systemd Type=notify unit follow the upgrades of
// a github.com/batonhq/baton/upgrader service: the unit stays active
// through every upgrade, MainPID names the process that serves, the
// watchdog is fed by that process only, and "systemctl reload" can run the
// upgrade. It speaks to systemd through package
// github.com/batonhq/baton/systemd.
//
// Its invariant: at any time at most one process of the service speaks to
// systemd as its main process, and it is the one systemd believes is. The old
// process stops its watchdog pings before it sends MAINPID=<new>; the new
// process sends nothing until the old one has seen systemd take that in
// (BARRIER=1) and told it so on a pipe handed over with the listeners. That
// is why NotifyAccess=main suffices.
//
// # What it sends
//
// Attach follows the upgrader's events (upgrader.Upgrader.OnEvent) and,
// when the process runs under systemd, sends:
//
//	event                      message
//	StepReady, first process   READY=1, STATUS=serving …; then FDSTORE=1 per listening TCP socket if the fd store is on
//	StepStarted                RELOADING=1, MONOTONIC_USEC=now, STATUS=upgrading …
//	StepChildReady (old)       stop pinging; MAINPID=<new>, STATUS=handing over …; BARRIER=1; then tell the new process
//	StepReady, new process     once told: READY=1, STATUS=serving …; FDSTORE=1 as above; its pings start
//	StepFailed                 READY=1, STATUS=upgrade failed: <reason on one line>
//	StepStopping               stop pinging; STOPPING=1, STATUS=stopping …
//
// A process that serves no longer (StepDraining after a handover) sends
// nothing more. A new process that is not told within twice
// AttachOptions.HandoverTimeout, or whose predecessor ran without this
// package, claims the main PID itself: MAINPID=<itself> with its READY=1,
// which systemd accepts only under NotifyAccess=all.
//
// The StepChildReady handler blocks the upgrader's Upgrade for as long as
// systemd takes to answer BARRIER=1 (at most AttachOptions.HandoverTimeout):
// the old process must not stop serving before MAINPID= has taken effect.
//
// With upgrader.Options.Probation nothing changes here, and that is the
// point: the old process emits StepChildReady, and the new one StepReady,
// only at the end of the probation, so MAINPID= moves (and the watchdog
// pings change hands) only then. A release rolled back during its probation
// is a StepFailed: READY=1 from the old process, which never stopped being
// the main one, so `systemctl reload` running `baton upgrade --wait` fails
// and systemd restarts nothing (NRestarts stays 0).
//
// # Not under systemd
//
// Without NOTIFY_SOCKET nothing is sent and nothing waits for systemd: Main
// is closed at ready, and RunWatchdog, given the Watchdog such a process
// gets (disabled), returns then. Attach still adopts the sockets passed
// by socket activation (systemd-socket-activate sets no NOTIFY_SOCKET), in
// the first process only: later ones inherit them from the upgrader.
//
// NOTES.md in the systemd directory records what systemd 252 was seen to do
// at a handover, which is what this package is built on.
package sdupgrade
