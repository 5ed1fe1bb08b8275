package systemd

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Environment variables set by the service manager, spelled as sd_notify(3),
// sd_listen_fds(3) and sd_watchdog_enabled(3) spell them.
const (
	EnvNotifySocket  = "NOTIFY_SOCKET"
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenFDNames = "LISTEN_FDNAMES"
	EnvWatchdogUSec  = "WATCHDOG_USEC"
	EnvWatchdogPID   = "WATCHDOG_PID"
	// EnvFDStore is FileDescriptorStoreMax= of the unit, which systemd 254
	// and later pass to the service (only when it is not 0). On older
	// versions a unit may set it itself with Environment=, to the same
	// value (package sdupgrade reads it: FDStoreAuto).
	EnvFDStore = "FDSTORE"
)

// Complete notification lines for the states that take no value, as
// sd_notify(3) spells them.
const (
	NotifyReady         = "READY=1"
	NotifyReloading     = "RELOADING=1"
	NotifyStopping      = "STOPPING=1"
	NotifyWatchdog      = "WATCHDOG=1"
	NotifyFDStore       = "FDSTORE=1"
	NotifyFDStoreRemove = "FDSTOREREMOVE=1"
	NotifyBarrier       = "BARRIER=1"
)

// Keys of the notification assignments that carry a value, as sd_notify(3)
// spells them. The functions Status, MainPID, Errno, ExtendTimeout, FDName
// and MonotonicUSec build whole lines with them.
const (
	KeyStatus            = "STATUS"
	KeyMainPID           = "MAINPID"
	KeyErrno             = "ERRNO"
	KeyExtendTimeoutUSec = "EXTEND_TIMEOUT_USEC"
	KeyMonotonicUSec     = "MONOTONIC_USEC"
	KeyFDName            = "FDNAME"
)

const (
	// ListenFDsStart is the first descriptor passed by socket activation
	// (SD_LISTEN_FDS_START).
	ListenFDsStart = 3

	// DefaultFDName is the name sd_listen_fds_with_names(3) gives a passed
	// descriptor when LISTEN_FDNAMES is not set.
	DefaultFDName = "unknown"

	// MaxMessageBytes is the longest notification systemd accepts: it drops
	// datagrams of PIPE_BUF (4096) bytes or more (NOTIFY_BUFFER_MAX).
	MaxMessageBytes = 4095

	// MaxMessageFDs is the most descriptors one datagram can carry
	// (the kernel's SCM_MAX_FD).
	MaxMessageFDs = 253

	// maxFDNameBytes is FDNAME_MAX in systemd.
	maxFDNameBytes = 255
)

// Status returns the line "STATUS=text": free-form text shown by
// systemctl status. A newline in text makes Notify fail with
// ErrInvalidMessage.
func Status(text string) string { return KeyStatus + "=" + text }

// MainPID returns the line "MAINPID=pid", which tells the service manager
// that pid is now the service's main process.
func MainPID(pid int) string { return KeyMainPID + "=" + strconv.Itoa(pid) }

// Errno returns the line "ERRNO=n": the errno-style reason of a failure.
func Errno(errno syscall.Errno) string {
	return KeyErrno + "=" + strconv.FormatUint(uint64(errno), 10)
}

// ExtendTimeout returns the line "EXTEND_TIMEOUT_USEC=µs", which asks for d
// more time for the current start, reload or stop. d is rounded up to a whole
// microsecond; a negative d counts as zero.
func ExtendTimeout(d time.Duration) string {
	return KeyExtendTimeoutUSec + "=" + strconv.FormatInt(usecCeil(d), 10)
}

// FDName returns the line "FDNAME=name" that names the descriptors of an
// FDSTORE=1 or FDSTOREREMOVE=1 message.
func FDName(name string) string { return KeyFDName + "=" + name }

// MonotonicUSec returns the line "MONOTONIC_USEC=µs" with the current
// CLOCK_MONOTONIC time, which systemd wants beside RELOADING=1 to order the
// reload against its own clock.
func MonotonicUSec() (string, error) {
	d, err := monotonicNow()
	if err != nil {
		return "", err
	}
	return KeyMonotonicUSec + "=" + strconv.FormatInt(d.Microseconds(), 10), nil
}

func usecCeil(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// encode joins lines into one datagram after checking each is a KEY=VALUE
// assignment whose value cannot be mistaken for further assignments.
func encode(lines []string) ([]byte, error) {
	if len(lines) == 0 {
		return nil, fmt.Errorf("%w: no assignments", ErrInvalidMessage)
	}
	for _, l := range lines {
		key, value, ok := strings.Cut(l, "=")
		if !ok || !validKey(key) {
			return nil, fmt.Errorf("%w: %q is not a KEY=VALUE assignment", ErrInvalidMessage, l)
		}
		// systemd splits the datagram at newlines; a NUL ends it early.
		if strings.ContainsAny(value, "\n\x00") {
			return nil, fmt.Errorf("%w: value of %s contains a newline or NUL", ErrInvalidMessage, key)
		}
	}
	msg := []byte(strings.Join(lines, "\n"))
	if len(msg) > MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes, systemd drops more than %d", ErrInvalidMessage, len(msg), MaxMessageBytes)
	}
	return msg, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validFDName applies systemd's fdname_is_valid, minus the empty name, which
// the store would replace with "stored": descriptors here are always named.
func validFDName(name string) error {
	if name == "" || len(name) > maxFDNameBytes {
		return fmt.Errorf("%w: FDNAME must be 1 to %d bytes, got %d", ErrInvalidMessage, maxFDNameBytes, len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("%w: FDNAME %q: only printable ASCII without ':' is allowed", ErrInvalidMessage, name)
		}
	}
	return nil
}
