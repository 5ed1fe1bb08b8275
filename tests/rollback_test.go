package tests

import (
	"path/filepath"
	"testing"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// TestRollbackHot: v1 -> v2 -> v1 by upgrades. v2 registers a down-migration
// of its kv schema, so the old v2 process writes the snapshot at the version
// the v1 binary reads, and every value v1 and v2 wrote is still there.
func TestRollbackHot(t *testing.T) {
	p := demotest.Start(t, demoV1)
	upgradertest.Install(t, demoV2, p.Bin)
	if u := p.Upgrade(t); u.Err != "" {
		t.Fatalf("v1 -> v2: %s", u.Err)
	}
	upgradertest.Install(t, demoV1, p.Bin)
	if u := p.Upgrade(t); u.Err != "" {
		t.Fatalf("v2 -> v1 (rollback): %s", u.Err)
	}
	checkRolledBack(t, p.KV(t), 3)
}

// TestRollbackCold: v1 writes its state file, v2 restarts from it and
// writes its own, and v1 restarts from v2's file: the values are intact.
func TestRollbackCold(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state")
	gens := 0
	for _, bin := range []string{demoV1, demoV2, demoV1} {
		p := demotest.StartEnv(t, nil, bin, dir, "-state-file", file)
		gens++
		if bin == demoV1 && gens == 3 {
			checkRolledBack(t, p.KV(t), 1)
		}
		stopAndWait(t, p)
	}
}

// checkRolledBack checks a v1 process's map after a round trip through v2:
// schema 1, the seeded values, and one entry per generation that wrote one.
func checkRolledBack(t *testing.T, kv demotest.KV, entries int) {
	t.Helper()
	if kv.Schema != 1 {
		t.Fatalf("schema %d after the rollback, want 1", kv.Schema)
	}
	if e := kv.Entries["key-00007"]; e.Value != "value-7" {
		t.Errorf("seeded entry after v1 -> v2 -> v1: %+v, want value-7", e)
	}
	if kv.Count < kvSeed+entries {
		t.Errorf("%d entries after the rollback, want at least %d (the seed and each generation's own)", kv.Count, kvSeed+entries)
	}
}
