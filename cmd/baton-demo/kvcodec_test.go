package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// TestKVCaptureOverBase checks that a capture after a restore, which
// copies the restored encoding and appends the keys set since, decodes to
// the map, through new keys, a key set twice, a restored key replaced,
// and enough changes to make the store encode the whole map again.
func TestKVCaptureOverBase(t *testing.T) {
	for _, schema := range []uint32{1, 2} {
		old := newKV(t)
		old.schema = schema
		old.seed(1000)
		var w bytes.Buffer
		if err := old.capture(&w); err != nil {
			t.Fatal(err)
		}
		kv := newKV(t)
		kv.schema = schema
		if err := kv.restore(bytes.NewReader(w.Bytes())); err != nil {
			t.Fatal(err)
		}
		kv.set("gen-1", kvEntry{Value: "a", Gen: 1}) // before the build
		kv.build()
		if kv.base == "" {
			t.Fatal("no base after a restore")
		}
		roundTrip := func(step string) {
			t.Helper()
			var c bytes.Buffer
			if err := kv.capture(&c); err != nil {
				t.Fatal(err)
			}
			got, err := decodeKV(c.Bytes(), schema != 1)
			want := maps.Clone(kv.m)
			for k, e := range want {
				if schema == 1 { // schema 1 carries no gen
					want[k] = kvEntry{Value: e.Value}
				}
			}
			if err != nil || !maps.Equal(got, want) {
				t.Fatalf("schema %d, %s: capture decodes to %d entries (%v), map has %d", schema, step, len(got), err, len(kv.m))
			}
		}
		roundTrip("a key set before the build")
		kv.set("gen-1", kvEntry{Value: "b", Gen: 1})
		kv.set("key-00003", kvEntry{Value: "replaced", Gen: 1})
		kv.set("new", kvEntry{Value: "c", Gen: 2})
		roundTrip("keys set again, replaced and new")
		if kv.base == "" {
			t.Fatal("base dropped after 3 changes")
		}
		for i := range 200 {
			kv.set(fmt.Sprintf("more-%d", i), kvEntry{Value: "x"})
		}
		if kv.base != "" {
			t.Error("base kept after 200 changes to 1,001 entries")
		}
		roundTrip("after the base was dropped")
	}
}
