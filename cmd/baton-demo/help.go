package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// errHelp ends the process with status 0 once -h has printed the help:
// asking for it is no failure.
var errHelp = errors.New("help shown")

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
