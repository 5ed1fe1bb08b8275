package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/batonhq/baton/state"
)

// errHelp and errVersion end the process with status 0 once -h or -version
// has printed what was asked: neither is a failure.
var (
	errHelp    = errors.New("help shown")
	errVersion = errors.New("version shown")
)

// helpText is the head of -h: what the demo serves and which signals it
// answers, so that a newcomer need not read the source to try it.
const helpText = `baton-demo is baton's example service: an HTTP server that upgrades itself
in place, without dropping a request, and carries its state (a map, counters,
background tasks) to the new process.

Usage:
  baton-demo [flags]

Endpoints (on -addr, and on -tls-addr with -tls-cert):
  GET    /              JSON: proto, tls, pid, generation, version, hits (hits carry
                        over upgrades); every reply has an X-Pid header
  POST   /echo          the request body, up to 1 MiB
  GET    /kv            the demo map: schema, count, entries (carried over upgrades)
  GET    /healthz       "ok" once ready, 503 while starting (the probation's check)
  GET    /metrics       Prometheus metrics: baton_*, baton_worker_*, go_*, process_*
  GET    /tasks         background tasks: totals and a page (?after=ID&limit=N) or ?id=ID
  POST   /tasks         add a task: a JSON body (201, 409 duplicate, 400 bad, 503 retry)
  GET    /tasks/{id}    one task, orphaned ones included
  DELETE /tasks/{id}    remove a task (204, 404)
  GET    /events        server-sent events: one "tick" per -event-interval, then "bye"
                        when the process drains, so the client reconnects to the new one

Signals:
  SIGHUP, SIGUSR2  upgrade: start the binary now at the same path and hand it the
                   sockets and the state; if it fails, this process keeps serving
  SIGTERM          graceful stop: drain the connections (up to -drain), stop the
                   tasks, write -state-file if set, exit
  SIGINT           the same as SIGTERM

Flags:
`

// printHelp writes the help and every flag with its default to w.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, helpText)
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// versionFlag is -version: alone (a boolean flag) it asks for the build
// to be printed; -version=STRING sets the version this process reports,
// as -ldflags "-X main.version=STRING" does at build time.
type versionFlag struct {
	version *string
	print   bool
}

func (f *versionFlag) String() string {
	if f.version == nil {
		return ""
	}
	return *f.version
}

func (f *versionFlag) Set(s string) error {
	if s == "true" {
		f.print = true
		return nil
	}
	*f.version = s
	return nil
}

// IsBoolFlag lets -version stand alone.
func (f *versionFlag) IsBoolFlag() bool { return true }

// buildLine describes this binary from runtime/debug.ReadBuildInfo, as
// the state registry records it in every snapshot: module and version,
// VCS revision, Go version, and the version the process reports.
func buildLine(user string) string {
	r, err := state.NewRegistry(state.Options{UserVersion: user})
	if err != nil {
		return user
	}
	return r.Build().String()
}
