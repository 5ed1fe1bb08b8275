package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

// profileEnv names a directory in which each process writes the CPU
// profile of its start, from main to serving, to cpu-PID.pprof: the
// start of a new process is what an upgrade waits for. It is an
// environment variable rather than a flag, so that it stays out of -h,
// and the new process inherits it.
const profileEnv = "BATON_DEMO_CPUPROFILE"

// startProfile starts the CPU profile of profileEnv, if set, and returns
// the function that stops it (once serving; later calls do nothing).
func startProfile() (stop func(), err error) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid())))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		f.Close()
	}), nil
}

// startCPU returns the CPU time, user and system, this process has used
// so far: logged once serving, it is the cost of the start (registration,
// restore) whatever the load of the machine, which stretches the wall
// time.
func startCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
