// Package systemd lets a service talk to systemd: sd_notify(3) messages over
// $NOTIFY_SOCKET (Notifier: READY=1, RELOADING=1, STOPPING=1, STATUS=,
// MAINPID=, BARRIER=1, …), socket activation (Files, Listeners,
// PacketConns), the file descriptor store (Notifier.StoreFDs, RemoveFDs)
// and the watchdog (Watchdog). It is pure Go on golang.org/x/sys/unix.
//
// Not running under systemd is a normal case, not an error: a disabled
// Notifier's sends return (false, nil), Files returns nothing, and a
// disabled Watchdog's Run returns at once.
//
// The invariant: every descriptor the package hands over or takes in stays
// in the mode the Go runtime needs and goes no further than meant. Activated
// descriptors are made close-on-exec and non-blocking; descriptors sent to
// systemd are read with SyscallConn().Control, never (*os.File).Fd(), which
// would switch a shared socket to blocking mode; LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES are removed once read, so no child mistakes them for its
// own. NOTIFY_SOCKET is kept: the process that takes over at an upgrade is a
// child and must be able to notify.
//
// # Handing the main PID over (measured on systemd 252)
//
// tests/sdns runs a service built on this package under a real systemd 252
// and checks each point below (TestNotifyServiceUnderSystemd):
//
//   - NotifyAccess=main: the OLD main process may send MAINPID=<new>, alone
//     or with READY=1 in the same message. systemd accepts it (the new
//     process is in the unit's cgroup): MainPID follows, the unit stays
//     active, NRestarts=0, and the new process's own READY=1, STATUS= and
//     WATCHDOG=1 are accepted from then on.
//   - NotifyAccess=all: the NEW process may send MAINPID=<itself> and
//     READY=1. Same outcome.
//   - NotifyAccess=main, the NEW process sends MAINPID=<itself>: refused
//     ("Got notification message from PID N, but reception only permitted
//     for main PID O"). When the old process exits, the unit is
//     "Deactivated successfully" (inactive, Result=success) and the new
//     process gets SIGTERM. A reload helper that only waits for MainPID to
//     change sees 0 and reports success: check for the expected pid and
//     ActiveState=active.
//   - If systemd reads MAINPID=<new> while the new process's parent (the
//     old one) is alive, it logs "Supervising process N which is not our
//     child" and marks it alien. It still notices its death (it is
//     re-parented to systemd), but at stop it does not wait for it after
//     SIGTERM: with nothing else in the cgroup, SIGKILL follows at once and
//     there is no graceful drain. Avoid it by starting the successor through
//     an intermediate process that exits at once (the successor is then
//     systemd's child when MAINPID= arrives), or with an ExecStop= that
//     sends SIGTERM to $MAINPID and waits for it to exit.
//   - WATCHDOG_PID is inherited too, naming the old process, so the new one
//     would believe the watchdog is not its own; NewWatchdog removes it
//     (see WatchdogOptions.KeepEnvironment).
//
// Recommended: NotifyAccess=main; the old process sends MAINPID=<new>, then
// Barrier, so that the switch has taken effect before it stops serving; the
// new process then sends READY=1 and STATUS= and starts Watchdog.Run. As the
// old process is alive at the switch, start the successor through an
// intermediate process or give the unit the waiting ExecStop= (as
// baton-demo.service in this directory does).
package systemd
