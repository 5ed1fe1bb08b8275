package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
)

func sampleKV() map[string]kvEntry {
	return map[string]kvEntry{"a": {Value: "1", Gen: 3}, "": {Value: "", Gen: -1}, "key-00007": {Value: "value-7", Gen: 0},
		"ünï": {Value: string(bytes.Repeat([]byte("x"), 70_000)), Gen: 1 << 40}}
}

func TestKVCodecRoundTrip(t *testing.T) {
	for _, gens := range []bool{false, true} {
		want := sampleKV()
		if !gens {
			for k, e := range want {
				want[k] = kvEntry{Value: e.Value}
			}
		}
		var w bytes.Buffer
		if err := writeKV(&w, want, gens); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.Bytes()[:1], appendKV(nil, want, gens)[:1]) || w.Len() != len(appendKV(nil, want, gens)) {
			t.Errorf("gens=%v: writeKV and appendKV differ", gens)
		}
		b, err := readKV(&w)
		var got map[string]kvEntry
		if err == nil {
			got, err = decodeKV(b, gens)
		}
		if err != nil {
			t.Fatalf("gens=%v: %v", gens, err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("gens=%v: got %v, want %v", gens, got, want)
		}
		empty, err := decodeKV(appendKV(nil, nil, gens), gens)
		if err != nil || len(empty) != 0 {
			t.Errorf("gens=%v: empty map: %v, %v", gens, empty, err)
		}
	}
}

func TestKVCodecRejectsDamage(t *testing.T) {
	good := appendKV(nil, sampleKV(), true)
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"trailing byte": append(append([]byte(nil), good...), 0),
		"json":          []byte(`{"a":"1"}`),
		"flat as gens":  appendKV(nil, sampleKV(), false),
		"empty":         nil,
	} {
		if _, err := decodeKV(b, true); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// TestKVMigrations runs every step a build registers on the same map and
// checks what comes out: the JSON of older builds in and out, gen -1 for
// entries that had none, gens dropped on the way down.
func TestKVMigrations(t *testing.T) {
	flat := map[string]string{"a": "1", "b": "2"}
	jsonFlat, _ := json.Marshal(flat)
	withGen := map[string]kvEntry{"a": {Value: "1", Gen: 4}, "b": {Value: "2", Gen: -1}}
	jsonGen, _ := json.Marshal(withGen)
	noGen := map[string]kvEntry{"a": {Value: "1"}, "b": {Value: "2"}}
	minus := map[string]kvEntry{"a": {Value: "1", Gen: -1}, "b": {Value: "2", Gen: -1}}

	check := func(name string, fn func([]byte) ([]byte, error), in []byte, gens bool, want map[string]kvEntry) {
		t.Helper()
		out, err := fn(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := decodeKV(out, gens)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("%s: got %v (%v), want %v", name, got, err, want)
		}
	}
	check("1->4", migrateJSONFlat, jsonFlat, false, noGen)
	check("2->5", migrateJSONGen, jsonGen, true, withGen)
	check("4->5", migrateKV1to2, appendKV(nil, noGen, false), true, minus)
	check("5->4", migrateKV2to1, appendKV(nil, withGen, true), false, noGen)

	out, err := migrateToJSONFlat(appendKV(nil, noGen, false))
	var back map[string]string
	if err != nil || json.Unmarshal(out, &back) != nil || !maps.Equal(back, flat) {
		t.Errorf("4->1: %s, %v; want %s", out, err, jsonFlat)
	}
}

// TestKVRestoreBuildsLater restores a map through a snapshot and checks
// that it is built on first use, with the changes made in between applied
// after it in order, and that a damaged section fails the restore itself.
func TestKVRestoreBuildsLater(t *testing.T) {
	old := newKV(t)
	old.seed(1000)
	old.set("gen-0", kvEntry{Value: "a"})
	var snap bytes.Buffer
	if _, err := kvRegistry(t, old).WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}

	kv := newKV(t)
	if _, err := kvRegistry(t, kv).ReadSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if kv.pending == nil {
		t.Fatal("restore built the map instead of leaving it for later")
	}
	kv.seed(5)                                   // the map is not empty: no effect
	kv.set("gen-1", kvEntry{Value: "b", Gen: 1}) // after the restored entries
	kv.set("gen-0", kvEntry{Value: "c"})         // replaces a restored one
	kv.build()
	want := maps.Clone(old.m)
	want["gen-1"], want["gen-0"] = kvEntry{Value: "b", Gen: 1}, kvEntry{Value: "c"}
	if !maps.Equal(kv.m, want) {
		t.Errorf("built map has %d entries, want %d; gen-0=%v gen-1=%v", len(kv.m), len(want), kv.m["gen-0"], kv.m["gen-1"])
	}

	var w bytes.Buffer
	if err := kv.capture(&w); err != nil {
		t.Fatal(err)
	}
	damaged := append([]byte(nil), w.Bytes()[:w.Len()-1]...)
	fresh := newKV(t)
	if err := fresh.restore(bytes.NewReader(damaged)); err == nil {
		t.Error("a truncated section restored")
	}
	if fresh.pending != nil || len(fresh.m) != 0 {
		t.Error("a failed restore changed the map")
	}
}
