// Package tests holds baton's end-to-end tests: real baton-demo processes,
// real signals and real load on 127.0.0.1.
package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/batonhq/baton/tests/demotest"
)

// Binaries built once for the whole package.
var (
	demoV1 string // baton-demo, version v1
	demoV2 string // baton-demo, version v2
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		demoV1 = filepath.Join(dir, "baton-demo-v1")
		demoV2 = filepath.Join(dir, "baton-demo-v2")
		for bin, version := range map[string]string{demoV1: "v1", demoV2: "v2"} {
			if err := demotest.Build("./cmd/baton-demo", bin, version); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}
