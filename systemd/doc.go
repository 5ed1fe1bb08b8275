// Package systemd lets a service talk to systemd: sd_notify(3) messages over
// $NOTIFY_SOCKET (Notifier: READY=1, RELOADING=1, STOPPING=1, STATUS=,
// MAINPID=, BARRIER=1, …), socket activation (Files, Listeners,
// PacketConns), the file descriptor store (Notifier.StoreFDs, RemoveFDs)
// and the watchdog (Watchdog); Attach makes a Type=notify unit follow the
// upgrades of a package upgrader service. It is pure Go on
// golang.org/x/sys/unix.
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
//
// # Following an upgrader.Upgrader (Attach)
//
// Attach implements that recommendation for package upgrader. In the first
// generation it adopts the activated sockets (u.AdoptListener, by
// FileDescriptorName= or address, each socket once). Then, on the upgrader's
// events:
//
//	ready (first generation)  READY=1, STATUS=serving …; FDSTORE=1 per TCP listener
//	started                   RELOADING=1, MONOTONIC_USEC=now, STATUS=upgrading …
//	child-ready (old process) stop pinging; MAINPID=<new>, STATUS=…; BARRIER=1;
//	                          then the word "main" to the new process
//	ready (new process)       after that word: READY=1, STATUS=serving …;
//	                          FDSTORE=1; its watchdog pings start
//	failed                    READY=1, STATUS=upgrade failed: <reason>
//	stopping                  stop pinging; STOPPING=1
//
// The word travels on a pipe the old process hands the new one with its
// listeners (upgrader.Upgrader.AddFile, "baton.systemd.handover"). It is
// needed because the new process reports ready to the upgrader before the
// old one sends MAINPID=: under NotifyAccess=main, a READY=1, STATUS= or
// WATCHDOG=1 from the new process that arrived first would be refused
// (systemd 252 logs a warning for each). With the pipe, the new process
// speaks only once systemd has processed MAINPID= naming it, and the old one
// has stopped its own pings before sending it: at any time exactly one
// process speaks for the service, the one systemd takes for the main one.
//
// NotifyAccess=main is the choice, measured on systemd 252 by
// tests/systemd_test.go (TestSystemdShippedUnits: twenty reloads under load,
// no refused notification in the journal). It admits only what the protocol
// needs: the main process names its successor, and nothing else in the unit
// (the "baton upgrade" of ExecReload=, a shell an operator starts) can move
// the main PID or feed the watchdog. NotifyAccess=all works as well, and is
// what a new generation falls back on when the old one sent no word (an older
// binary without this integration): it then sends MAINPID=<itself> with its
// READY=1, which systemd accepts only under "all".
//
// RELOADING=1 and READY=1 bracket every upgrade, whoever triggered it. After
// "systemctl reload" with ExecReload=baton upgrade --wait they change
// nothing: the reload ends when ExecReload= exits (and fails when it fails).
// After a SIGHUP or "baton upgrade" sent from outside, systemd 252 shows the
// unit "reloading" until READY=1. On systemd 253 and later the same messages
// implement Type=notify-reload: "systemctl reload" sends SIGHUP (ReloadSignal=),
// RELOADING=1 with MONOTONIC_USEC= later than the signal starts the reload,
// and READY=1 ends it, from the new process after the handover, or from the
// old one after a failure (the reload then succeeds: only ExecReload= can
// make "systemctl reload" fail). That was checked against systemd's source,
// not run: 252 is the newest version here.
package systemd
