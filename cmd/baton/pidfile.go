package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// A pid file left behind by a process that did not remove it (killed, or
// an older release) names a pid that may since have gone to another
// program. The service writes its pid file once it is ready, after it
// started; a process that started after the file was last written cannot
// be the one it names.

// userHZ is the unit of the start time in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture.
const userHZ = 100

// startSlack absorbs the rounding of the boot time (whole seconds) and of
// the start time (ticks).
const startSlack = time.Second

// checkPidFileFresh returns an error if pid, read from the pid file at
// path, belongs to a process that started after the file was written.
func checkPidFileFresh(path string, pid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read the pid file: %w", err)
	}
	started, err := processStart(pid)
	if err != nil {
		return fmt.Errorf("pid %d from %s: %w", pid, path, err)
	}
	if written := fi.ModTime(); started.After(written.Add(startSlack)) {
		return fmt.Errorf("pid file %s is stale: it was written at %s, and pid %d started later, at %s: "+
			"the service that wrote it is gone and the pid belongs to another program, which was not signalled",
			path, written.Format(time.RFC3339), pid, started.Format(time.RFC3339))
	}
	return nil
}

// processStart returns when pid started, from /proc.
func processStart(pid int) (time.Time, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, fmt.Errorf("not running: %w", err)
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted are those after it, from field 3 (the state) on.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return time.Time{}, errors.New("cannot parse /proc/<pid>/stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3
	if len(fields) <= startField {
		return time.Time{}, errors.New("cannot parse /proc/<pid>/stat")
	}
	ticks, err := strconv.ParseInt(fields[startField], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("start time: %w", err)
	}
	boot, err := bootTime()
	if err != nil {
		return time.Time{}, err
	}
	return boot.Add(time.Duration(ticks) * time.Second / userHZ), nil
}

// bootTime reads the boot time from /proc/stat.
func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time: %w", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
