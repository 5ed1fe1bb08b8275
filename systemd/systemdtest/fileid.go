//go:build linux

package systemdtest

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FileID identifies an open file: two descriptors of one socket, pipe or
// file have the same.
type FileID struct{ Dev, Ino uint64 }

// FDFileID returns the FileID of descriptor fd.
func FDFileID(t testing.TB, fd int) FileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return FileID{uint64(st.Dev), st.Ino}
}

// ConnFileID returns the FileID of c's descriptor (a listener, a
// connection, an *os.File), read without (*os.File).Fd, which would switch
// it to blocking mode.
func ConnFileID(t testing.TB, c syscall.Conn) (id FileID) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { id = FDFileID(t, int(fd)) }); err != nil {
		t.Fatal(err)
	}
	return id
}
