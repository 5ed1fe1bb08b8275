package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/upgrader"
)

const tasksUsage = `Usage:
  baton tasks [--socket PATH] [--json] [--kind K] [--state S] [--orphans]
  baton tasks pause|resume|run-now [--socket PATH] [--json] ID

Lists the service's background tasks: id, kind, schedule, state (idle,
running, backoff, frozen, done, paused, or orphaned: in the state but of a
kind this binary does not run), runs, last run, last error, next run.
pause stops scheduling a task, resume schedules it again from its next
point, run-now runs it once at once without moving its schedule.
The service must serve its control socket and answer the tasks commands
(upgrader.HandleControl; baton-demo does).

`

// taskRow is one task of the service's tasks.list answer.
type taskRow struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Schedule  string    `json:"schedule"`
	Status    string    `json:"status"`
	Runs      uint64    `json:"runs"`
	LastRun   time.Time `json:"last_run"`
	LastError string    `json:"last_error"`
	Next      time.Time `json:"next"`
	Reason    string    `json:"reason"` // an orphan's
}

func cmdTasks(args []string, stdout, stderr io.Writer) int {
	verb := "list"
	if len(args) > 0 {
		switch args[0] {
		case "pause", "resume", "run-now":
			verb, args = args[0], args[1:]
		}
	}
	fs := flag.NewFlagSet("tasks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", os.Getenv("BATON_SOCKET"), "the service's control socket `path` (default $BATON_SOCKET)")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	var list taskListArgs
	if verb == "list" {
		fs.StringVar(&list.Kind, "kind", "", "only tasks of this `kind`")
		fs.StringVar(&list.State, "state", "", "only tasks in this `state`")
		fs.BoolVar(&list.Orphans, "orphans", false, "only the orphaned tasks")
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, tasksUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *socket == "" {
		fmt.Fprintln(stderr, "baton tasks: give --socket (or set BATON_SOCKET): the tasks are reached through the control socket")
		return exitUsage
	}
	var cmdArgs any = list
	switch {
	case verb == "list" && fs.NArg() > 0:
		fmt.Fprintf(stderr, "baton tasks: unexpected argument %q (pause, resume and run-now take an ID)\n", fs.Arg(0))
		return exitUsage
	case verb != "list" && fs.NArg() != 1:
		fmt.Fprintf(stderr, "baton tasks %s: give exactly one task ID\n", verb)
		return exitUsage
	case verb != "list":
		cmdArgs = map[string]string{"id": fs.Arg(0)}
	}
	r, err := askAdded(*socket, "tasks."+verb, cmdArgs)
	if err != nil {
		fmt.Fprintf(stderr, "baton tasks: %v\n", err)
		return exitUnreachable
	}
	return printTasksReply(verb, r, *asJSON, stdout, stderr)
}

// printTasksReply prints the service's answer to a tasks command and
// returns the exit status.
func printTasksReply(verb string, r upgrader.ControlDataReply, asJSON bool, stdout, stderr io.Writer) int {
	if r.Type == upgrader.ReplyError {
		fmt.Fprintf(stderr, "baton tasks %s: %s\n", verb, r.Error)
		switch r.Code {
		case upgrader.CodeBadRequest:
			if strings.Contains(r.Error, "unknown command") {
				fmt.Fprintln(stderr, "baton tasks: this service does not answer the tasks commands on its control socket")
			}
			return exitUsage
		case upgrader.CodeForbidden, upgrader.CodeVersion:
			return exitUnreachable
		}
		return exitFailed
	}
	if asJSON {
		stdout.Write(r.Data)
		fmt.Fprintln(stdout)
		return exitOK
	}
	if verb != "list" {
		var row taskRow
		if err := json.Unmarshal(r.Data, &row); err != nil {
			fmt.Fprintf(stderr, "baton tasks: bad answer: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "%s: %s, %d runs, next run %s\n", row.ID, row.Status, row.Runs, when(row.Next, time.Now()))
		return exitOK
	}
	var ans struct {
		Tasks   []taskRow `json:"tasks"`
		Orphans []taskRow `json:"orphans"`
	}
	if err := json.Unmarshal(r.Data, &ans); err != nil {
		fmt.Fprintf(stderr, "baton tasks: bad answer: %v\n", err)
		return exitFailed
	}
	printTasks(stdout, ans.Tasks, ans.Orphans, time.Now())
	return exitOK
}

// taskListArgs are the service's tasks.list filters.
type taskListArgs struct {
	Kind    string `json:"kind,omitempty"`
	State   string `json:"state,omitempty"`
	Orphans bool   `json:"orphans,omitempty"`
}

func printTasks(w io.Writer, tasks, orphans []taskRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSCHEDULE\tSTATE\tRUNS\tLAST RUN\tLAST ERROR\tNEXT RUN")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.ID, dash(t.Kind), t.Schedule, t.Status, t.Runs,
			when(t.LastRun, now), dash(clip(t.LastError, 40)), when(t.Next, now))
	}
	for _, o := range orphans {
		fmt.Fprintf(tw, "%s\t%s\t-\torphaned\t%d\t-\t%s\t-\n", o.ID, dash(o.Kind), o.Runs, clip(o.Reason, 60))
	}
	tw.Flush()
}

// when says a time relative to now: "in 2s", "3m ago", "-" for none.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	switch {
	case d >= 0:
		return "in " + d.Round(roundTo(d)).String()
	default:
		return (-d).Round(roundTo(-d)).String() + " ago"
	}
}

func roundTo(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Millisecond
	}
	return time.Second
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// askAdded sends a command the service added to its control socket and
// returns its one reply line.
func askAdded(socket, cmd string, args any) (upgrader.ControlDataReply, error) {
	var r upgrader.ControlDataReply
	c, err := upgrader.DialControl(socket)
	if err != nil {
		return r, fmt.Errorf("cannot reach the service at %s: %w", socket, err)
	}
	defer c.Close()
	a, err := json.Marshal(args)
	if err != nil {
		return r, err
	}
	req, _ := json.Marshal(map[string]any{"v": upgrader.ControlVersion, "cmd": cmd, "args": json.RawMessage(a)})
	werr := func() error { _, err := c.Write(append(req, '\n')); return err }()
	br := bufio.NewReaderSize(c, 64<<10)
	line, err := br.ReadBytes('\n')
	if len(line) == 0 {
		if werr != nil {
			return r, fmt.Errorf("sending the request: %w", werr)
		}
		return r, fmt.Errorf("reading the reply: %w", err)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("bad reply from the service: %w", err)
	}
	return r, nil
}
