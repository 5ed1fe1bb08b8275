package main

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// The collector during the restore: a new process builds most of its heap
// at once when it restores its state (a million data tasks are some
// 400 MB), and the collector, paced by a heap that doubles again and
// again, marks it over and over as it grows, on a core the restore needs,
// with write barriers on while it marks. Little of what the restore
// allocates is garbage before it ends (the snapshot's chunks stay in use
// until it does), so collecting then frees little: -restore-gc off
// defers the first collection to the end of the restore, when GOGC is set
// back and the collector marks the heap once, while the process serves.
// The default, auto, is off when the restore builds the tasks
// (-tasks-as-data), keep when the process registered them before: then
// the heap is built already, the restore adds little to it, and turning
// the collector off measurably spared no time but let the peak grow.

// parseRestoreGC reads -restore-gc: "off", "keep" (the process's GOGC,
// as the environment set it) or a GOGC percent; "auto" is off if
// tasksAsData, keep if not.
func parseRestoreGC(v string, tasksAsData bool) (percent int, keep bool, err error) {
	switch v {
	case "auto":
		if tasksAsData {
			return -1, false, nil
		}
		return 0, true, nil
	case "keep":
		return 0, true, nil
	case "off":
		return -1, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("-restore-gc must be auto, off, keep or a percent of 1 or more, not %q", v)
	}
	return n, false, nil
}

// restoreGC sets GOGC for the restore as v, checked by parseFlags, says,
// and returns the function that sets it back.
func restoreGC(v string, tasksAsData bool) (back func()) {
	percent, keep, _ := parseRestoreGC(v, tasksAsData)
	if keep {
		return func() {}
	}
	prev := debug.SetGCPercent(percent)
	return func() { debug.SetGCPercent(prev) }
}
