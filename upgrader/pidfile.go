package upgrader

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The pid file (Options.PIDFile) names the serving process: it is replaced
// atomically (a rename over it) just before the ready byte, and removed by
// the process it names when that one stops. tableflip would write it in its
// Ready, but its way (a temporary file created, written, renamed and removed
// again, all at that moment) costs about 0.65 ms on ext4, where renaming
// over a file forces the new file's blocks to be allocated: measured in a
// new process under load, that was the most expensive single step between
// the ready gate's answer and the ready byte. So the upgrader writes the
// file itself, and prepares it ahead: New writes this process's pid into an
// unnamed file in the pid file's directory (O_TMPFILE, in the background
// while the process starts) and starts writing it out, and becoming ready
// only gives it a name and renames it over the pid file. A process that
// never becomes ready leaves nothing behind: its unnamed file goes with its last descriptor, whether
// it returns, fails or is killed. Where unnamed files are not supported
// (another system, or a file system without O_TMPFILE) the file is written
// the classic way when the process becomes ready.

// preparePIDFile starts writing this process's pid into an unnamed file
// beside Options.PIDFile, if there is one; writePIDFile and
// discardPIDFile take the result: the file, or nil if none could be made.
// The channel holds it and is then closed, so that it is taken once. It is
// called once, by New.
func (u *Upgrader) preparePIDFile() {
	if u.pidFile == "" {
		return
	}
	ch := make(chan *os.File, 1)
	u.pidPrepared = ch
	go func() {
		defer close(ch)
		f, err := openPreparedPID(filepath.Dir(u.pidFile), os.Getpid())
		if err != nil {
			// Written the classic way at the ready instead.
			u.log.Debug("pid file not prepared ahead", "path", u.pidFile, "err", err)
		}
		ch <- f
	}()
}

// takePreparedPID returns the prepared file, once: nil if there is none,
// it was taken before, or, unless wait, it is not prepared yet (the
// preparation is never waited for at the ready: writing the file there is
// no slower than waiting).
func (u *Upgrader) takePreparedPID(wait bool) *os.File {
	if u.pidPrepared == nil {
		return nil
	}
	if wait {
		return <-u.pidPrepared
	}
	select {
	case f := <-u.pidPrepared:
		return f
	default:
		return nil
	}
}

// writePIDFile makes the pid file name this process, atomically: the
// prepared file linked in and renamed over it, or, failing that, a file
// written now. It is called at the ready, just before the ready byte.
func (u *Upgrader) writePIDFile() error {
	if u.pidFile == "" {
		return nil
	}
	if f := u.takePreparedPID(false); f != nil {
		err := linkPreparedPID(f, u.pidFile)
		f.Close()
		if err == nil {
			return nil
		}
		u.log.Debug("prepared pid file not linked: writing it now", "path", u.pidFile, "err", err)
	}
	if err := u.rewritePIDFile(); err != nil {
		return fmt.Errorf("write pid file %s: %w", u.pidFile, err)
	}
	return nil
}

// discardPIDFile closes the prepared file if it was not used, once it is
// prepared: the unnamed file is gone with it.
func (u *Upgrader) discardPIDFile() {
	if f := u.takePreparedPID(true); f != nil {
		f.Close()
	}
}

// rewritePIDFile writes this process's pid to the pid file, atomically, as
// tableflip does: a temporary file beside it renamed over it. It is the
// way when no prepared file can be used, and the old process's after a
// rollback, when the file must name it again whatever the new one did.
func (u *Upgrader) rewritePIDFile() error {
	if u.pidFile == "" {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(u.pidFile), filepath.Base(u.pidFile)+".*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(os.Getpid()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), u.pidFile)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// removePIDFile removes Options.PIDFile if it names this process: the
// process is stopping, and a file left behind would name a pid that may go
// to another program. After an upgrade the file names the new process
// (which rewrote it when it was ready) and stays; a new process that fails
// never wrote it. Another process could rewrite the file between the read
// and the removal only by becoming ready, which needs this one's handoff:
// the file is this process's until it exits.
func (u *Upgrader) removePIDFile() {
	if u.pidFile == "" {
		return
	}
	b, err := os.ReadFile(u.pidFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		return
	}
	if err := os.Remove(u.pidFile); err != nil {
		u.log.Warn("pid file not removed", "path", u.pidFile, "err", err)
	}
}
