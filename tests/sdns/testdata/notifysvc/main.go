// Command notifysvc is the Type=notify service that package sdns's tests run
// under a real systemd. It uses package systemd for everything it says to
// the service manager:
//
//   - READY=1 with a STATUS= once it listens (its own socket, a
//     socket-activated one, or one given back by the fd store);
//   - on SIGHUP it upgrades itself: it starts a copy of its binary that
//     inherits the listening socket, waits until the copy is ready and then
//     exits, after the main PID has moved to the copy. Who announces the
//     move is the point of the -handover flag:
//     "old": the old main process sends MAINPID=<new>; the new one then
//     sends READY=1 and STATUS= as the main process;
//     "old-ready": the old main process sends MAINPID=<new> and READY=1 in
//     one message; the new one then sends STATUS= as the main process;
//     "new": the new process sends MAINPID=<itself>, READY=1 and STATUS=;
//     With -barrier the old process waits (BARRIER=1) until systemd has
//     processed its MAINPID= before it goes on. With -reparent the
//     successor is started through a short-lived intermediate process, so
//     that it is already systemd's child, not the old process's, when
//     systemd learns its pid;
//   - -watchdog: WATCHDOG=1 pings while the file -sick names does not exist;
//   - -fdstore: its own listening socket goes to the fd store (FDSTORE=1,
//     FDNAME=web); SIGUSR1 removes it (FDSTOREREMOVE=1);
//   - SIGTERM: STOPPING=1, a pretend drain of -drain, and exit.
//
// Every connection is answered with one line:
// "pid=<pid> gen=<generation> from=<origin of the listener> ino=<socket inode>".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/systemd"
)

// A successor finds the listener at fd 3, the write end of the "ready" pipe
// at fd 4 and the read end of the "go" pipe at fd 5.
const (
	envGen       = "NOTIFYSVC_GEN"
	envSuccessor = "NOTIFYSVC_SUCCESSOR"
	envSpawn     = "NOTIFYSVC_SPAWN"
	fdListener   = 3
	fdReady      = 4
	fdGo         = 5
)

var (
	addr     = flag.String("addr", "127.0.0.1:8080", "address to listen on when no socket is inherited")
	handover = flag.String("handover", "old", `who sends MAINPID= at an upgrade: "old", "old-ready" or "new"`)
	watchdog = flag.Bool("watchdog", false, "ping the watchdog (WatchdogSec=)")
	keepWPID = flag.Bool("keep-watchdog-pid", false, "leave WATCHDOG_PID for the successor (it then believes the watchdog is not its own)")
	sick     = flag.String("sick", "", "the health check fails while this file exists")
	fdstore  = flag.Bool("fdstore", false, "put a socket this process bound into the fd store as \"web\"")
	barrier  = flag.Bool("barrier", false, "after MAINPID=, wait until systemd processed it (BARRIER=1)")
	reparent = flag.Bool("reparent", false, "start the successor through an intermediate process that exits at once")
	drain    = flag.Duration("drain", 0, "time a SIGTERM takes to handle, standing in for draining connections")
)

func logf(format string, a ...any) {
	fmt.Printf("notifysvc[%d] gen=%s: %s\n", os.Getpid(), os.Getenv(envGen), fmt.Sprintf(format, a...))
}

func main() {
	flag.Parse()
	if os.Getenv(envSpawn) == "1" {
		// the intermediate of -reparent: start the successor with our
		// descriptors 0-5 and exit, so that it is re-parented to systemd
		os.Unsetenv(envSpawn)
		exe, _ := os.Executable()
		if _, err := syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
			Env:   os.Environ(),
			Files: []uintptr{0, 1, 2, fdListener, fdReady, fdGo},
		}); err != nil {
			logf("spawn: %v", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := run(); err != nil {
		logf("error: %v", err)
		os.Exit(1)
	}
}

func run() error {
	// before READY=1: "systemctl reload" may follow at once, and an
	// unhandled SIGHUP kills
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR1)

	gen, _ := strconv.Atoi(os.Getenv(envGen))
	pid := os.Getpid()
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		return err
	}
	successor := os.Getenv(envSuccessor) == "1"
	os.Unsetenv(envSuccessor)

	ln, from, err := listener(successor)
	if err != nil {
		return err
	}
	ino := inode(ln)
	status := systemd.Status(fmt.Sprintf("gen %d (pid %d) serving, listener from %s", gen, pid, from))
	if successor {
		err = takeOver(n, pid, status)
	} else {
		err = announce(n, ln, from, status)
	}
	if err != nil {
		return err
	}
	logf("serving on %s, listener from %s, inode %d", ln.Addr(), from, ino)

	// Both goroutines are joined before the process exits or hands over.
	ctx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	var wg sync.WaitGroup
	if *watchdog {
		if err := startWatchdog(ctx, n, &wg); err != nil {
			return err
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		answer(ln, pid, gen, from, ino)
	}()
	stop := func() { stopWatchdog(); ln.Close(); wg.Wait() }
	return handleSignals(sigs, n, ln, gen, stopWatchdog, stop)
}

// announce is the first generation's READY=1 and, with -fdstore, its own
// listening socket to the fd store.
func announce(n *systemd.Notifier, ln net.Listener, from, status string) error {
	if _, err := n.Notify(systemd.NotifyReady, status); err != nil {
		return err
	}
	if *fdstore && from == "bind" {
		if _, err := n.StoreFDs("web", ln.(syscall.Conn)); err != nil {
			return err
		}
		logf("listener stored as \"web\"")
	}
	return nil
}

// startWatchdog pings the watchdog, in a goroutine wg counts, until ctx is
// done.
func startWatchdog(ctx context.Context, n *systemd.Notifier, wg *sync.WaitGroup) error {
	w, err := systemd.NewWatchdog(systemd.WatchdogOptions{
		Notifier:        n,
		Check:           healthy,
		KeepEnvironment: *keepWPID,
	})
	if err != nil {
		return err
	}
	logf("watchdog enabled=%v timeout=%v", w.Enabled(), w.Timeout())
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx) }()
	return nil
}

// answer answers every connection with its one line until ln is closed.
func answer(ln net.Listener, pid, gen int, from string, ino uint64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "pid=%d gen=%d from=%s ino=%d\n", pid, gen, from, ino)
		c.Close()
	}
}

// handleSignals serves the signals until SIGTERM or a handover ends the
// process: stopWatchdog stops the pings, stop them and the serving.
func handleSignals(sigs <-chan os.Signal, n *systemd.Notifier, ln net.Listener, gen int, stopWatchdog, stop func()) error {
	for sig := range sigs {
		switch sig {
		case syscall.SIGTERM:
			n.Stopping()
			stop()
			logf("SIGTERM, draining for %v", *drain)
			time.Sleep(*drain)
			logf("drained, exiting")
			return nil
		case syscall.SIGUSR1:
			sent, err := n.RemoveFDs("web")
			logf("FDSTOREREMOVE web: sent=%v err=%v", sent, err)
		case syscall.SIGHUP:
			logf("SIGHUP: starting gen %d", gen+1)
			// stop pinging first: after the handover this process is no
			// longer the main one and its pings would be refused
			stopWatchdog()
			if err := upgrade(n, ln, gen+1, stop); err != nil {
				logf("upgrade failed, staying: %v", err)
				// a real service would restart its watchdog here; the
				// tests never get there
				continue
			}
			logf("handed over, exiting")
			return nil
		}
	}
	return nil
}

// healthy is the watchdog's health check.
func healthy(context.Context) error {
	if *sick == "" {
		return nil
	}
	if _, err := os.Stat(*sick); err == nil {
		return errors.New("sick file " + *sick + " exists")
	}
	return nil
}

// listener returns the listening socket and where it came from: "upgrade"
// (the previous generation), "systemd:<name>" (socket activation or the fd
// store, through systemd.Listeners) or "bind".
func listener(successor bool) (net.Listener, string, error) {
	if successor {
		f := os.NewFile(fdListener, "upgrade")
		ln, err := net.FileListener(f) // dups, and makes the dup non-blocking
		f.Close()
		return ln, "upgrade", err
	}
	lns, err := systemd.Listeners(systemd.ActivationOptions{})
	if err != nil {
		return nil, "", err
	}
	if len(lns) > 0 {
		for _, extra := range lns[1:] {
			extra.Listener.Close()
		}
		return lns[0].Listener, "systemd:" + lns[0].Name, nil
	}
	ln, err := net.Listen("tcp", *addr)
	return ln, "bind", err
}

// takeOver is the successor's side of the handover.
func takeOver(n *systemd.Notifier, pid int, status string) error {
	if *handover == "new" {
		// only allowed with NotifyAccess=all: we are not the main PID yet
		if _, err := n.Notify(systemd.MainPID(pid), systemd.NotifyReady, status); err != nil {
			return err
		}
	}
	ready := os.NewFile(fdReady, "ready")
	if _, err := fmt.Fprintf(ready, "ready %d\n", pid); err != nil {
		return err
	}
	ready.Close()
	// wait for the old process: "go" means it is done (and, with
	// -handover=old, has sent MAINPID=<us>, which systemd reads before
	// anything we send from now on: one socket, one queue)
	goPipe := os.NewFile(fdGo, "go")
	b, err := io.ReadAll(io.LimitReader(goPipe, 8))
	goPipe.Close()
	if err != nil || string(b) != "go" {
		return fmt.Errorf("old process did not hand over (%q, %v)", b, err)
	}
	switch *handover {
	case "old":
		_, err = n.Notify(systemd.NotifyReady, status)
	case "old-ready":
		_, err = n.Notify(status)
	}
	return err
}

// upgrade starts the next generation with the listener as fd 3 and waits,
// bounded, until it is ready; then (with -handover=old*) moves the main PID
// to it, stops serving, and tells it to go on.
func upgrade(n *systemd.Notifier, ln net.Listener, gen int, stop func()) error {
	p, err := newHandoverPipes()
	if err != nil {
		return err
	}
	defer p.close()
	child, err := forkSuccessor(ln, gen, p)
	if err != nil {
		return err
	}
	if child, err = awaitSuccessor(p.readyR, child); err != nil {
		return err
	}
	if err := handOver(n, child); err != nil {
		return err
	}
	stop()
	if _, err := p.goW.Write([]byte("go")); err != nil {
		return err
	}
	logf("successor pid %d took over", child)
	return nil
}

// handoverPipes are the two pipes between this process and its successor:
// the successor writes "ready <pid>" into the first; this process writes
// "go" into the second once it has handed over. The successor's ends are
// raw descriptors, closed here once it has been started with them.
type handoverPipes struct {
	readyR      *os.File
	goW         *os.File
	readyW, goR int
}

func newHandoverPipes() (*handoverPipes, error) {
	var readyP, goP [2]int
	if err := syscall.Pipe2(readyP[:], syscall.O_CLOEXEC); err != nil {
		return nil, err
	}
	if err := syscall.Pipe2(goP[:], syscall.O_CLOEXEC); err != nil {
		syscall.Close(readyP[0])
		syscall.Close(readyP[1])
		return nil, err
	}
	syscall.SetNonblock(readyP[0], true) // pollable, so awaitSuccessor's deadline works
	return &handoverPipes{
		readyR: os.NewFile(uintptr(readyP[0]), "ready"),
		goW:    os.NewFile(uintptr(goP[1]), "go"),
		readyW: readyP[1],
		goR:    goP[0],
	}, nil
}

// close closes this process's ends.
func (p *handoverPipes) close() {
	p.goW.Close()
	p.readyR.Close()
}

// forkSuccessor starts the next generation, gen, with the listener as fd 3
// and the successor's ends of the pipes as fds 4 and 5, and returns its
// pid, or 0 with -reparent, where the pid started is the intermediate's.
//
// syscall.ForkExec with raw descriptors, not exec.Cmd.ExtraFiles, which
// calls (*os.File).Fd() and so switches the shared listening socket to
// blocking mode: this process's Accept would then sit in accept(2) and its
// Close wait for the next client.
func forkSuccessor(ln net.Listener, gen int, p *handoverPipes) (int, error) {
	env := successorEnv(gen)
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var child int
	var forkErr error
	rc.Control(func(lfd uintptr) {
		child, forkErr = syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
			Env:   env,
			Files: []uintptr{0, 1, 2, lfd, uintptr(p.readyW), uintptr(p.goR)},
		})
	})
	syscall.Close(p.readyW)
	syscall.Close(p.goR)
	if forkErr != nil {
		return 0, forkErr
	}
	if *reparent {
		// the intermediate exits at once; the successor's pid comes
		// with its "ready" line
		var ws syscall.WaitStatus
		syscall.Wait4(child, &ws, 0, nil)
		child = 0
	}
	return child, nil
}

// successorEnv is this process's environment without notifysvc's own
// variables, plus those that make the next process generation gen's
// successor (and, with -reparent, the intermediate first).
func successorEnv(gen int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFYSVC_") {
			env = append(env, kv)
		}
	}
	env = append(env, envSuccessor+"=1", envGen+"="+strconv.Itoa(gen))
	if *reparent {
		env = append(env, envSpawn+"=1")
	}
	return env
}

// awaitSuccessor waits up to 10 s for the successor's "ready <pid>" line
// and returns its pid. child is the pid started, 0 if it is not known
// (-reparent); a known child that is not ready, or not the one that says
// so, is killed.
func awaitSuccessor(readyR *os.File, child int) (int, error) {
	readyR.SetReadDeadline(time.Now().Add(10 * time.Second))
	var succ int
	if _, err := fmt.Fscanf(readyR, "ready %d\n", &succ); err != nil || (child != 0 && succ != child) {
		if child != 0 {
			var ws syscall.WaitStatus
			syscall.Kill(child, syscall.SIGKILL)
			syscall.Wait4(child, &ws, 0, nil)
		}
		return 0, fmt.Errorf("successor %d not ready: %v", succ, err)
	}
	return succ, nil
}

// handOver moves the main PID to child if this process is the one that
// announces it (-handover=old or old-ready) and, with -barrier, waits
// until systemd has processed that.
func handOver(n *systemd.Notifier, child int) error {
	handing := systemd.Status(fmt.Sprintf("handing over to pid %d", child))
	var err error
	switch *handover {
	case "old":
		_, err = n.Notify(systemd.MainPID(child), handing)
	case "old-ready":
		_, err = n.Notify(systemd.MainPID(child), systemd.NotifyReady, handing)
	}
	if err != nil {
		return err
	}
	if *barrier {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.Barrier(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// inode identifies the listening socket across processes. Read through
// SyscallConn: Fd() would switch the socket to blocking mode.
func inode(ln net.Listener) uint64 {
	var ino uint64
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0
	}
	rc.Control(func(fd uintptr) {
		var st syscall.Stat_t
		if syscall.Fstat(int(fd), &st) == nil {
			ino = st.Ino
		}
	})
	return ino
}
