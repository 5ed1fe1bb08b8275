// Command baton operates services that embed baton's upgrader: it triggers
// an upgrade and reports its outcome, and shows what is running.
//
//	baton upgrade --socket /run/demo/control.sock --wait
//	baton status --socket /run/demo/control.sock
//
// Exit status: 0 success, 1 the upgrade failed, 2 usage error, 3 the
// service cannot be reached (or its control socket is served by another
// user, to whom baton sends nothing), 4 the upgrade was rolled back during
// its probation (the old process serves).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/internal/pidfd"
	"github.com/batonhq/baton/upgrader"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	// exitRolledBack: the new process was ready but failed its probation;
	// the old one took the service back (the message names the step and
	// how the new process ended).
	exitRolledBack = 4
)

const usage = `baton operates services that embed baton's upgrader.

Usage:
  baton upgrade [--socket PATH | --pidfile PATH] [--wait] [--timeout D] [--json]
  baton status  [--socket PATH | --pidfile PATH] [--json]
  baton tasks   [--socket PATH] [--json] [--kind K] [--state S] [--orphans]
  baton tasks   pause|resume|run-now [--socket PATH] ID
  baton version
  baton help [command]

The service is reached through its control socket (--socket, or the
BATON_SOCKET environment variable), or, with less detail, through its pid file.

Exit status: 0 success, 1 the upgrade failed, 2 usage error,
3 the service cannot be reached (or its control socket is served by
another user than you or root: baton sends it nothing), 4 the upgrade
was rolled back: the new process died or failed its health check during
its probation, and the old process serves on.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "upgrade":
		return cmdUpgrade(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "tasks":
		return cmdTasks(args[1:], stdout, stderr)
	case "version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "baton: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// target is how a command reaches the service.
type target struct {
	socket  string
	pidfile string
	json    bool
}

func (t *target) flags(fs *flag.FlagSet) {
	fs.StringVar(&t.socket, "socket", os.Getenv("BATON_SOCKET"), "the service's control socket `path` (default $BATON_SOCKET)")
	fs.StringVar(&t.pidfile, "pidfile", "", "the service's pid file `path`, when it has no control socket")
	fs.BoolVar(&t.json, "json", false, "print JSON, one object per line, for scripts")
}

func (t *target) check() error {
	if (t.socket == "") == (t.pidfile == "") {
		return errors.New("give exactly one of --socket and --pidfile")
	}
	return nil
}

func parse(fs *flag.FlagSet, args []string, t *target, stderr io.Writer) (int, bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "baton %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	if err := t.check(); err != nil {
		fmt.Fprintf(stderr, "baton %s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	return 0, true
}

func cmdUpgrade(args []string, stdout, stderr io.Writer) int {
	var t target
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	t.flags(fs)
	wait := fs.Bool("wait", false, "wait until the upgrade succeeded or failed, and say which")
	timeout := fs.Duration("timeout", 0, "give up waiting after this long (default: the service's upgrade and drain timeouts)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: baton upgrade [--socket PATH | --pidfile PATH] [--wait] [--timeout D] [--json]\n\n"+
			"Starts the binary now at the service's path and hands it the service's sockets and state.\n"+
			"With --wait, prints each step and exits 0 once the new process serves and the old one\n"+
			"has drained, or 1 with the reason if the upgrade failed (the old process keeps serving).\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, &t, stderr); !ok {
		return code
	}
	if t.pidfile != "" {
		return upgradeByPidfile(t, *wait, *timeout, stdout, stderr)
	}
	req := upgrader.ControlRequest{Command: upgrader.CommandUpgrade, Wait: *wait, TimeoutMillis: timeout.Milliseconds()}
	code := exitUnreachable
	oldPid := 0
	err := call(t.socket, req, func(r upgrader.ControlReply) {
		oldPid = r.Pid
		if t.json {
			json.NewEncoder(stdout).Encode(r)
		}
		if c, ok := upgradeReply(r, t.json, *wait, stdout, stderr); ok {
			code = c
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "baton upgrade: %v\n", err)
		return exitUnreachable
	}
	if code == exitOK && *wait && oldPid > 0 {
		// The old process answered "done" once drained; it exits right
		// after. Waiting for that makes the next upgrade possible at
		// once: a service runs at most two generations.
		limit := *timeout
		if limit <= 0 {
			limit = 30 * time.Second
		}
		if err := waitExit(oldPid, limit); err != nil {
			fmt.Fprintf(stderr, "baton upgrade: the new process serves, but %v\n", err)
			return exitFailed
		}
	}
	return code
}

// upgradeReply prints one reply of an upgrade (unless quiet, for --json)
// and returns the exit status it decides, if it decides one: a result is
// success, an error says which failure.
func upgradeReply(r upgrader.ControlReply, quiet, wait bool, stdout, stderr io.Writer) (int, bool) {
	switch r.Type {
	case upgrader.ReplyEvent:
		if !quiet {
			fmt.Fprintln(stdout, describeEvent(*r.Event))
		}
	case upgrader.ReplyResult:
		if !quiet {
			if wait {
				fmt.Fprintf(stdout, "upgraded: pid %d, generation %d, in %v\n", r.Result.Pid, r.Result.Generation, r.Result.Duration.Round(time.Millisecond))
			} else {
				fmt.Fprintln(stdout, "upgrade started")
			}
		}
		return exitOK, true
	case upgrader.ReplyError:
		switch r.Code {
		case upgrader.CodeRolledBack:
			fmt.Fprintf(stderr, "baton upgrade: rolled back, the old process (pid %d) serves on: %s\n", r.Pid, r.Error)
			return exitRolledBack, true
		case upgrader.CodeBadRequest, upgrader.CodeVersion:
			fmt.Fprintf(stderr, "baton upgrade: %s\n", r.Error)
			return exitUsage, true
		case upgrader.CodeForbidden:
			fmt.Fprintf(stderr, "baton upgrade: %s\n", r.Error)
			return exitUnreachable, true
		}
		fmt.Fprintf(stderr, "baton upgrade: %s\n", r.Error)
		return exitFailed, true
	}
	return 0, false
}

// waitExit waits for pid to exit, through a pidfd.
func waitExit(pid int, timeout time.Duration) error {
	err := pidfd.Wait(pid, timeout)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("old pid %d has not exited after %v", pid, timeout)
	}
	if err != nil {
		return fmt.Errorf("cannot watch old pid %d: %w", pid, err)
	}
	return nil
}

func describeEvent(e upgrader.Event) string {
	switch e.Step {
	case upgrader.StepStarted:
		return "upgrade started"
	case upgrader.StepChildStarted:
		return fmt.Sprintf("new process started: pid %d", e.Pid)
	case upgrader.StepStateSent:
		return fmt.Sprintf("state sent: %s", bytesString(e.Bytes))
	case upgrader.StepProbation:
		return fmt.Sprintf("new process serving on probation: pid %d; the old process stands by", e.Pid)
	case upgrader.StepRolledBack:
		return fmt.Sprintf("rolled back: new process %d failed its probation; the old process serves", e.Pid)
	case upgrader.StepChildReady:
		return fmt.Sprintf("new process ready: pid %d", e.Pid)
	case upgrader.StepDraining:
		return "old process draining"
	case upgrader.StepDone:
		if e.Error != "" {
			return "done (" + e.Error + ")"
		}
		return "old process drained"
	case upgrader.StepFailed:
		return "failed: " + e.Error
	}
	return string(e.Step)
}

// call sends req on the control socket and hands each reply line to f.
func call(socket string, req upgrader.ControlRequest, f func(upgrader.ControlReply)) error {
	c, err := upgrader.DialControl(socket)
	if errors.Is(err, upgrader.ErrControlServer) {
		return fmt.Errorf("%w: another user may have taken the path; check it and the service's directory", err)
	}
	if err != nil {
		return fmt.Errorf("cannot reach the service: %w (is it running with its control socket at %s?)", err, socket)
	}
	defer c.Close()
	req.Version = upgrader.ControlVersion
	// A service that refuses the client replies and closes at once, so a
	// failed write is reported only if no reply explains it.
	werr := json.NewEncoder(c).Encode(req)
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	got := false
	for sc.Scan() {
		var r upgrader.ControlReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("bad reply from the service: %w", err)
		}
		got = true
		f(r)
	}
	if err := sc.Err(); err != nil && !got {
		return fmt.Errorf("reading the reply: %w", err)
	}
	if !got && werr != nil {
		return fmt.Errorf("cannot reach the service: %w", werr)
	}
	if !got {
		return errors.New("the service closed the connection without replying")
	}
	return nil
}

// upgradeByPidfile sends SIGHUP to the pid in the pid file and, with wait,
// watches the pid file name a new process and the old one exit. It cannot
// learn why an upgrade failed: only that it did not happen in time.
func upgradeByPidfile(t target, wait bool, timeout time.Duration, stdout, stderr io.Writer) int {
	old, err := readPid(t.pidfile)
	if err != nil {
		fmt.Fprintf(stderr, "baton upgrade: %v\n", err)
		return exitUnreachable
	}
	// Hold the process by a pidfd before signalling it, so that neither the
	// signal nor the wait can reach another program that took the pid.
	p, err := pidfd.Open(old)
	if err != nil {
		fmt.Fprintf(stderr, "baton upgrade: pid %d: %v\n", old, err)
		return exitUnreachable
	}
	defer p.Close()
	// Checked once the pidfd holds the process: a pid reused after this
	// check cannot be signalled through it.
	if err := checkPidFileFresh(t.pidfile, old); err != nil {
		fmt.Fprintf(stderr, "baton upgrade: %v\n", err)
		return exitUnreachable
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "baton upgrade: signal pid %d: %v\n", old, err)
		return exitUnreachable
	}
	if !wait {
		fmt.Fprintf(stdout, "sent SIGHUP to pid %d\n", old)
		return exitOK
	}
	if timeout <= 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The old process exits only after its successor is ready and it has
	// drained.
	if err := p.Wait(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "baton upgrade: pid %d is still the service after %v: the upgrade failed or is still draining (see the service's log; a control socket gives the reason)\n", old, timeout)
			return exitFailed
		}
		fmt.Fprintf(stderr, "baton upgrade: watch pid %d: %v\n", old, err)
		return exitUnreachable
	}
	pid, err := readPid(t.pidfile)
	if err == nil && pid != old && syscall.Kill(pid, 0) == nil {
		fmt.Fprintf(stdout, "upgraded: pid %d replaced pid %d\n", pid, old)
		return exitOK
	}
	fmt.Fprintf(stderr, "baton upgrade: pid %d exited and no new process took over (see the service's log)\n", old)
	return exitFailed
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read the pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s does not hold a pid", path)
	}
	return pid, nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var t target
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	t.flags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: baton status [--socket PATH | --pidfile PATH] [--json]\n\n"+
			"Shows the running process: pid, generation, version and build, uptime, listeners,\n"+
			"recent upgrades and the state it carries.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, &t, stderr); !ok {
		return code
	}
	if t.pidfile != "" {
		pid, err := readPid(t.pidfile)
		if err == nil && syscall.Kill(pid, 0) != nil {
			err = fmt.Errorf("pid %d from %s is not running", pid, t.pidfile)
		}
		if err == nil {
			err = checkPidFileFresh(t.pidfile, pid)
		}
		if err != nil {
			fmt.Fprintf(stderr, "baton status: %v\n", err)
			return exitUnreachable
		}
		if t.json {
			json.NewEncoder(stdout).Encode(map[string]int{"pid": pid})
		} else {
			fmt.Fprintf(stdout, "pid %d is running (a control socket gives the full status)\n", pid)
		}
		return exitOK
	}
	code := exitUnreachable
	err := call(t.socket, upgrader.ControlRequest{Command: upgrader.CommandStatus}, func(r upgrader.ControlReply) {
		switch {
		case r.Type == upgrader.ReplyStatus && t.json:
			json.NewEncoder(stdout).Encode(r.Status)
			code = exitOK
		case r.Type == upgrader.ReplyStatus:
			printStatus(stdout, r.Status)
			code = exitOK
		case r.Type == upgrader.ReplyError:
			fmt.Fprintf(stderr, "baton status: %s\n", r.Error)
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "baton status: %v\n", err)
		return exitUnreachable
	}
	return code
}

func printStatus(w io.Writer, st *upgrader.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	printProcess(tw, st)
	printListeners(tw, st)
	printSections(tw, st)
	printComponents(tw, st)
	tw.Flush()
	printHistory(w, st.History)
}

// printProcess writes who answers: pid, generation, version, build, uptime.
func printProcess(tw io.Writer, st *upgrader.Status) {
	version := st.Build.User
	if version == "" {
		version = st.Build.Version
	}
	fmt.Fprintf(tw, "pid\t%d\n", st.Pid)
	fmt.Fprintf(tw, "generation\t%d\n", st.Generation)
	fmt.Fprintf(tw, "version\t%s\n", version)
	build := []string{st.Build.GoVersion}
	if st.Build.Revision != "" {
		build = append(build, "revision "+st.Build.Revision)
	}
	if st.Build.Module != "" {
		build = append([]string{st.Build.Module + " " + st.Build.Version}, build...)
	}
	fmt.Fprintf(tw, "build\t%s\n", strings.Join(build, ", "))
	fmt.Fprintf(tw, "uptime\t%v\n", st.Uptime.Round(time.Second))
}

// label is the first column of a group of rows: the name on the first.
func label(i int, name string) string {
	if i == 0 {
		return name
	}
	return ""
}

func printListeners(tw io.Writer, st *upgrader.Status) {
	for i, l := range st.Listeners {
		origin := "new"
		if l.Inherited {
			origin = "inherited"
		}
		fmt.Fprintf(tw, "%s\t%s %s %s (%s)\n", label(i, "listeners"), l.Kind, l.Network, l.Addr, origin)
	}
}

func printSections(tw io.Writer, st *upgrader.Status) {
	for i, s := range st.Sections {
		size := ""
		if st.Restored != nil {
			for _, r := range st.Restored.Sections {
				if r.Name == s.Name {
					size = ", " + bytesString(r.Bytes) + " received"
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s v%d%s\n", label(i, "state"), s.Name, s.Version, size)
	}
}

func printComponents(tw io.Writer, st *upgrader.Status) {
	names := make([]string, 0, len(st.Components))
	for k := range st.Components {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		b, _ := json.Marshal(st.Components[k])
		fmt.Fprintf(tw, "%s\t%s: %s\n", label(i, "components"), k, b)
	}
}

func printHistory(w io.Writer, history []upgrader.Record) {
	if len(history) == 0 {
		fmt.Fprintln(w, "upgrades: none yet")
		return
	}
	fmt.Fprintf(w, "upgrades (last %d):\n", len(history))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := len(history) - 1; i >= 0; i-- {
		r := history[i]
		detail := fmt.Sprintf("pid %d -> %d", r.FromPid, r.ToPid)
		if r.Result != "success" {
			detail = fmt.Sprintf("at %s: %s", r.Step, r.Reason)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\n", r.Started.Local().Format("2006-01-02 15:04:05"), r.Result, r.Duration.Round(time.Millisecond), detail)
	}
	tw.Flush()
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
