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
// The default, auto, keeps GOGC: with the worker's pre-copy the restore
// spans several rounds whose buffers are garbage as soon as each is
// applied, and with the collector off they piled up (1M data tasks: the
// new process at 2.6x the old one's RSS and a 1 s work pause, against
// 1.9x and 234 ms with it on). Off still helps a restore in one round of
// tasks it builds (a state file, fewer tasks than a pre-copy needs).

// parseRestoreGC reads -restore-gc: "off", "keep" (the process's GOGC,
// as the environment set it) or a GOGC percent; "auto" is keep.
func parseRestoreGC(v string) (percent int, keep bool, err error) {
	switch v {
	case "auto", "keep":
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
func restoreGC(v string) (back func()) {
	percent, keep, _ := parseRestoreGC(v)
	if keep {
		return func() {}
	}
	prev := debug.SetGCPercent(percent)
	return func() { debug.SetGCPercent(prev) }
}
