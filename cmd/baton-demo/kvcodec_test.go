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
		got, err := readKV(&w, gens)
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
