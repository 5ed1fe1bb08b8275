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
	demoV1    string // baton-demo v1: kv schema 1
	demoV2    string // baton-demo v2: kv schema 2, migrates from 1
	demoV3    string // baton-demo v3: kv schema 3, reads neither 1 nor 2
	demoFault string // baton-demo v1 with fault injection (upgradertest.Fault)
	batonCLI  string // the baton command
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
		demoV3 = filepath.Join(dir, "baton-demo-v3")
		demoFault = filepath.Join(dir, "baton-demo-fault")
		batonCLI = filepath.Join(dir, "baton")
		if err := demotest.Build("./cmd/baton", batonCLI, demotest.BuildOpts{Version: "test"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// The CLI test runs it as another user, who must reach it.
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for bin, o := range map[string]demotest.BuildOpts{
			demoV1:    {Version: "v1", KVSchema: "1"},
			demoV2:    {Version: "v2", KVSchema: "2"},
			demoV3:    {Version: "v3", KVSchema: "3"},
			demoFault: {Version: "v1", KVSchema: "1", Tags: "batonfault"},
		} {
			if err := demotest.Build("./cmd/baton-demo", bin, o); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}
