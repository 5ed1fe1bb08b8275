// Package systemdtest is a test kit for code that talks to systemd through
// package systemd, as net/http/httptest is for HTTP handlers: a real
// notification socket to point NOTIFY_SOCKET at, and a way to start a
// process the way systemd starts a socket-activated service.
//
// Manager is the receiving end of sd_notify(3): an AF_UNIX datagram socket
// with SO_PASSCRED, set up as systemd sets up its own, so every message
// arrives with its sender's credentials and descriptors. It records what it
// receives and decides nothing: the test reads each message, and answers a
// BARRIER=1 by closing the descriptor that came with it (Manager.CloseFD),
// which is what systemd does once it has processed the messages before it.
// ActivationCommand (and RunActivated, which runs it to its end) starts a
// process with descriptors at fd 3… and LISTEN_* set to name it, as systemd
// does for a socket-activated service; Listen and ListenerFile make the
// sockets to pass, and FileID tells whether a descriptor that came back is
// one of them.
//
// Linux only, like systemd.
package systemdtest
