package upgrader

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Where the control socket lives, and who may serve it: the path is
// checked before anything is removed, and the client checks the server.

// listenControl takes the control socket: inherited from the previous
// generation, or created with mode 0600 (see prepareControlPath).
func (u *Upgrader) listenControl(path string) (net.Listener, error) {
	if !u.tf.HasParent() {
		if err := u.prepareControlPath(path); err != nil {
			return nil, err
		}
	}
	ln, err := u.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// prepareControlPath checks that a control socket may be created at path,
// and removes what is there only if it is a socket nobody answers on (left
// by a process that died). It refuses a directory that others can write or
// that belongs to another user (who could take the path first, or swap the
// file between the check and the removal) and anything at the path that is
// not a socket, or a socket that is served or cannot be tried.
func (u *Upgrader) prepareControlPath(path string) error {
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrControlSocket, path, err)
	}
	if perm := di.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s: its directory %s is writable by other users (mode %04o), who could take the path first: "+
			"put the socket in a directory only its owner can write, such as a RuntimeDirectory under /run", ErrControlSocket, path, dir, uint32(perm))
	}
	if st, ok := di.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%w: %s: its directory %s belongs to uid %d, who could replace the socket: "+
			"put it in a directory of this user (uid %d) or root", ErrControlSocket, path, dir, st.Uid, os.Getuid())
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %w", ErrControlSocket, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%w: %s exists and is not a socket (%s): refusing to replace it; remove it or choose another path",
			ErrControlSocket, path, fileKind(fi.Mode()))
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s: another process is serving it", ErrControlSocket, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %s: cannot tell whether a process serves it: %w", ErrControlSocket, path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("%w: removing the stale socket: %w", ErrControlSocket, err)
	}
	u.log.Info("removed a stale control socket that nobody answered on", "path", path)
	return nil
}

// fileKind names what a file mode describes, for an error message.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// DialControl connects to the control socket at path, as a client such as
// the baton command does, and checks who serves it before anything is sent:
// a server that is neither this user nor root (another user who took the
// path first) is refused with ErrControlServer, and nothing is sent.
// SO_PEERCRED gives the credentials of the process that called listen: on a
// socket handed over across upgrades, the first generation, which runs as
// the same user as the others.
func DialControl(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	uid, pid, ok, err := peerAllowed(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot check who serves %s: %w", path, err)
	}
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: %s is served by uid %d (pid %d), not by you (uid %d) or root", ErrControlServer, path, uid, pid, os.Getuid())
	}
	return c, nil
}
