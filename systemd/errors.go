package systemd

import "errors"

// Sentinel errors. Functions wrap them with context (%w); test with errors.Is.
var (
	// ErrNotSupported is returned on platforms without systemd (anything but
	// Linux).
	ErrNotSupported = errors.New("systemd: not supported on this platform")

	// ErrInvalidSocket means the notification socket address is neither an
	// absolute path nor an abstract name ("@name"), or is too long. Check
	// $NOTIFY_SOCKET or NotifierOptions.Socket.
	ErrInvalidSocket = errors.New("systemd: invalid notification socket address")

	// ErrInvalidMessage means a notification was not sent because it breaks
	// the protocol: a line that is not KEY=VALUE, a value with a newline
	// (which would smuggle in another assignment), a message systemd would
	// drop as too long, too many descriptors, or an invalid FDNAME=.
	ErrInvalidMessage = errors.New("systemd: invalid notification")

	// ErrInvalidActivation means LISTEN_PID, LISTEN_FDS or LISTEN_FDNAMES is
	// malformed or names descriptors this process does not have. The
	// variables are removed anyway (unless ActivationOptions.KeepEnvironment)
	// and no descriptor was touched.
	ErrInvalidActivation = errors.New("systemd: malformed socket activation environment")

	// ErrSocketType means an activated descriptor is not the kind of socket
	// asked for (Listeners wants listening stream sockets, PacketConns
	// datagram sockets). Use Files and convert each File as fits.
	ErrSocketType = errors.New("systemd: activated descriptor has the wrong socket type")

	// ErrInvalidWatchdog means WATCHDOG_USEC or WATCHDOG_PID is malformed.
	ErrInvalidWatchdog = errors.New("systemd: malformed watchdog environment")
)
