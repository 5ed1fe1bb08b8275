package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/batonhq/baton/state"
)

// version is this release of baton, if set at build time with
// -ldflags "-X main.version=v1.2.3"; the module version from the build
// info is printed either way.
var version string

// cmdVersion prints baton's own build: module and version, VCS revision
// and Go version, from runtime/debug.ReadBuildInfo (the same record a
// service writes into its snapshots and `baton status` shows for it).
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the build as one JSON object")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: baton version [--json]\n\nPrints baton's module version, VCS revision and Go version.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "baton version: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	r, err := state.NewRegistry(state.Options{UserVersion: version})
	if err != nil {
		fmt.Fprintln(stderr, "baton version:", err)
		return exitFailed
	}
	b := r.Build()
	if *asJSON {
		json.NewEncoder(stdout).Encode(b)
		return exitOK
	}
	fmt.Fprintf(stdout, "baton %s\n", b)
	return exitOK
}
