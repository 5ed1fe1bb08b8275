// Package systemd is the service side of systemd's protocols, in pure Go on
// the standard library and golang.org/x/sys/unix: notifications
// (sd_notify(3): Notifier, Notify), socket activation and the file
// descriptor store (sd_listen_fds(3): Files, Listeners, PacketConns;
// Notifier.StoreFDs, RemoveFDs) and the watchdog (sd_watchdog_enabled(3):
// WatchdogEnabled, Watchdog). Names are spelled as the protocol spells them
// (NotifyReady is "READY=1", EnvListenPID is "LISTEN_PID").
//
// It knows nothing of upgrades. Package
// github.com/batonhq/baton/systemd/sdupgrade builds on it to make a unit
// follow the upgrades of a github.com/batonhq/baton/upgrader service, and
// package github.com/batonhq/baton/systemd/systemdtest is a fake service
// manager for tests.
//
// # What it sends
//
// Exactly the lines a caller passes, one datagram per call, from a fresh
// socket (no descriptor stays open between calls), with the descriptors the
// caller attaches and nothing else; the kernel adds the sender's
// credentials, which systemd checks against NotifyAccess=. The only message
// the package sends on its own is Watchdog.Run's WATCHDOG=1, each one after
// the caller's health check passed. A message is checked before it is sent:
// KEY=VALUE lines whose values hold no newline or NUL (which would smuggle
// in another assignment), at most MaxMessageBytes bytes and MaxMessageFDs
// descriptors, and for StoreFDs and RemoveFDs a valid FDNAME=. One that fails is never sent, whether
// or not systemd is there, and the call returns an error wrapping
// ErrInvalidMessage. Sent is not accepted: systemd drops, and logs, what
// NotifyAccess= does not allow.
//
// # Not under systemd
//
// Not running under systemd is a normal case, not an error:
//
//   - NOTIFY_SOCKET unset or empty: the Notifier is disabled and every send
//     returns (false, nil); Barrier returns at once.
//   - LISTEN_PID unset or naming another process (typically the parent the
//     variables were meant for), or LISTEN_FDS unset or 0: Files,
//     Listeners and PacketConns return nothing.
//   - WATCHDOG_USEC unset or 0, or WATCHDOG_PID naming another process: the
//     Watchdog is disabled and Run returns at once.
//
// Errors are for what systemd would never set: a notification socket that
// is neither an absolute path nor an abstract "@name" (ErrInvalidSocket),
// malformed LISTEN_* (ErrInvalidActivation) or WATCHDOG_* (ErrInvalidWatchdog).
//
// # What it checks
//
// Before Files touches any descriptor it checks that LISTEN_PID is this
// process, that LISTEN_FDS is a count within the open file limit, that
// LISTEN_FDNAMES has one name per descriptor, and that every descriptor from
// 3 (ListenFDsStart) is open and was inherited (not close-on-exec: the Go
// runtime opens files of its own at 3 and 4). Listeners and PacketConns also
// check each socket's type (ErrSocketType). A Watchdog pings only if
// WATCHDOG_PID, when set, is this process.
//
// # Descriptors and the environment
//
// Every descriptor the package hands over or takes in stays in the mode the
// Go runtime needs and goes no further than meant. Activated descriptors are
// made close-on-exec and non-blocking; descriptors sent to systemd are read
// with SyscallConn().Control, never (*os.File).Fd(), which would switch a
// shared socket to blocking mode. LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
// are removed once read (ActivationOptions.KeepEnvironment keeps them), so
// no child mistakes them for its own; NewWatchdog removes a WATCHDOG_PID
// naming this process (WatchdogOptions.KeepEnvironment), which would tell a
// successor the watchdog is not its own. NOTIFY_SOCKET is kept
// (NotifierOptions.UnsetEnvironment removes it): a process that takes over
// at an upgrade is a child and must be able to notify.
//
// On platforms other than Linux, a call that would need the operating
// system returns ErrNotSupported.
//
// What systemd 252 was seen to do with these messages at a handover of the
// main process, and why sdupgrade sends what it sends, is written down in
// NOTES.md, beside this file.
package systemd
