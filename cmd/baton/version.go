package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is this release of baton, if set at build time with
// -ldflags "-X main.version=v1.2.3"; the module version from the build
// info is printed either way.
var version string

// cmdVersion prints baton's own build from runtime/debug.ReadBuildInfo:
// module and version, VCS revision and Go version, in the words
// `baton status` uses for the service's build. baton reads it here rather
// than through state, which the CLI does not import (ARCHITECTURE.md).
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: baton version\n\nPrints baton's module version, VCS revision and Go version.\n")
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
	fmt.Fprintln(stdout, buildSummary())
	return exitOK
}

// buildSummary is one line: "baton [VERSION] (MODULE MODVERSION,
// revision REV[, modified], GOVERSION)", each part that the build lacks
// left out (a -buildvcs=false build has no revision).
func buildSummary() string {
	parts := []string{}
	goVersion := runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		parts = append(parts, bi.Main.Path+" "+bi.Main.Version)
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				parts = append(parts, "revision "+s.Value)
			case s.Key == "vcs.modified" && s.Value == "true":
				parts = append(parts, "modified")
			}
		}
		goVersion = bi.GoVersion
	}
	name := "baton"
	if version != "" {
		name += " " + version
	}
	return fmt.Sprintf("%s (%s)", name, strings.Join(append(parts, goVersion), ", "))
}
