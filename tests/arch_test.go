package tests

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestArchitectureImportGraph holds ARCHITECTURE.md's package table to the
// code: for every package it names, the imports column lists exactly the
// package's imports outside the standard library (in-module packages by
// their path below the module, third-party modules by a short name), as go
// list reports them for the package without its tests.
func TestArchitectureImportGraph(t *testing.T) {
	want := architectureTable(t)
	if len(want) < 10 {
		t.Fatalf("ARCHITECTURE.md's package table has %d rows; expected every library package and cmd", len(want))
	}
	const module = "github.com/batonhq/baton/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasPrefix(pkg, "tests") {
			continue
		}
		listed[pkg] = true
		var got []string
		for _, imp := range fields[1:] {
			if name := shortImport(module, imp); name != "" && !slices.Contains(got, name) {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		w, ok := want[pkg]
		if !ok {
			t.Errorf("package %s is missing from ARCHITECTURE.md's table (it imports %v)", pkg, got)
			continue
		}
		if !slices.Equal(got, w) {
			t.Errorf("ARCHITECTURE.md says %s imports %v; go list says %v", pkg, w, got)
		}
	}
	for pkg := range want {
		if !listed[pkg] {
			t.Errorf("ARCHITECTURE.md names package %s, which does not exist", pkg)
		}
	}
}

// shortImport names an import as the table does, or "" for the standard
// library.
func shortImport(module, imp string) string {
	switch {
	case strings.HasPrefix(imp, module):
		return strings.TrimPrefix(imp, module)
	case strings.HasPrefix(imp, "golang.org/x/sys/"):
		return "x/sys"
	case imp == "github.com/cloudflare/tableflip":
		return "tableflip"
	case strings.HasPrefix(imp, "github.com/prometheus/client_golang/"):
		return "client_golang"
	case strings.HasPrefix(imp, "github.com/tinylib/msgp/"):
		return "msgp"
	case !strings.Contains(strings.Split(imp, "/")[0], "."):
		return "" // the standard library
	}
	return imp
}

// architectureTable reads the package table: package -> sorted imports.
func architectureTable(t *testing.T) map[string][]string {
	f, err := os.Open("../ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([^`]+)` \\|.*\\|([^|]*)\\|$")
	name := regexp.MustCompile("`([^`]+)`|([A-Za-z_/.]+)")
	table := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		deps := []string{}
		for _, d := range strings.Split(m[2], ",") {
			if n := name.FindStringSubmatch(strings.TrimSpace(d)); n != nil {
				deps = append(deps, n[1]+n[2])
			}
		}
		slices.Sort(deps)
		table[m[1]] = deps
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return table
}
