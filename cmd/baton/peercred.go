package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// checkServer refuses a control socket whose server is not this user or
// root. Whoever can create the path first (a world-writable directory, a
// stale path after the service stopped) could otherwise receive the
// commands and answer them as the service would. SO_PEERCRED on a connected
// Unix socket gives the credentials of the process that called listen on
// it: on a socket handed over across upgrades, the first generation, which
// runs as the same user as the others.
func checkServer(c net.Conn, socket string) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%s is not a unix socket", socket)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("cannot check who serves %s: %w", socket, cerr)
	}
	if me := os.Getuid(); cred.Uid != 0 && int(cred.Uid) != me {
		return fmt.Errorf("refusing to talk to %s: it is served by uid %d (pid %d), not by you (uid %d) or root; "+
			"another user may have taken the path: check it, and the service's directory", socket, cred.Uid, cred.Pid, me)
	}
	return nil
}
