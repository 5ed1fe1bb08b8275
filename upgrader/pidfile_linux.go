package upgrader

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// openPreparedPID returns an unnamed file in dir (O_TMPFILE) holding pid,
// with the mode tableflip gives the pid file.
func openPreparedPID(dir string, pid int) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed pid file)"))
	if _, err := f.WriteString(strconv.Itoa(pid)); err != nil {
		f.Close()
		return nil, err
	}
	// Start writing the byte out now. On ext4 a rename over a file first
	// allocates and writes out the renamed file's pending blocks
	// (auto_da_alloc): done here, in the background, the rename at the
	// ready finds none. Not waited for, and only a hint: an error changes
	// nothing.
	unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	return f, nil
}

// linkPreparedPID names the unnamed file f beside path and renames it over
// path. The name it is linked under holds this process's pid, so no other
// live process uses it; one left by a process that died between the link
// and the rename (a pid reused since) is removed first. linkat does not
// follow a symbolic link at the new name, it fails on it.
func linkPreparedPID(f *os.File, path string) error {
	tmp := path + "." + strconv.Itoa(os.Getpid()) + ".new"
	src := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	link := func() error {
		return unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW)
	}
	err := link()
	if errors.Is(err, unix.EEXIST) {
		os.Remove(tmp)
		err = link()
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: src, New: tmp, Err: err}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
