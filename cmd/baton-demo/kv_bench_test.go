package main

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/batonhq/baton/state"
)

// BenchmarkKVHandoff moves the demo's 100,000-entry map through a snapshot
// as an upgrade does, without the transport: capture in one registry
// (WriteSnapshotFor the new one's Accepts, as the handoff does), restore
// (ReadSnapshot) in another. "binary" is demo.kv as built; "json" is the
// encoding/json participant of the builds before the binary codec, the
// baseline, measured in the same run. restore is what the new process
// waits for before it serves (binary: reading and checking the section),
// restore+build includes building the map, which the binary participant
// does once the process serves. capture-restored is the capture of every
// generation after the first, of a map it restored. capture-file is the cold path
// (WriteSnapshot, as a state file): with the JSON copy for older builds.
func BenchmarkKVHandoff(b *testing.B) {
	for _, c := range []struct {
		name string
		reg  func(testing.TB, *kvStore) *state.Registry
	}{{"binary", kvRegistry}, {"json", jsonKVRegistry}} {
		b.Run(c.name, func(b *testing.B) {
			old := newKV(b)
			old.seed(100_000)
			oldReg := c.reg(b, old)
			accepts := c.reg(b, newKV(b)).Accepts()
			var snap bytes.Buffer
			b.Run("capture", func(b *testing.B) {
				for b.Loop() {
					snap.Reset()
					if _, err := oldReg.WriteSnapshotFor(&snap, accepts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(snap.Len()), "bytes")
			})
			for _, build := range []bool{false, true} {
				name := "restore"
				if build {
					name = "restore+build"
				}
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						kv := newKV(b)
						reg := c.reg(b, kv)
						b.StartTimer()
						if _, err := reg.ReadSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
							b.Fatal(err)
						}
						if build {
							kv.build()
							if len(kv.m) != 100_000 {
								b.Fatalf("restored %d entries", len(kv.m))
							}
						}
					}
				})
			}
			// What every generation after the first captures: a map
			// it restored (and built), with its own entry added.
			restored := newKV(b)
			reg := c.reg(b, restored)
			if _, err := reg.ReadSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
				b.Fatal(err)
			}
			restored.set("gen-1", kvEntry{Value: "1", Gen: 1})
			b.Run("capture-restored", func(b *testing.B) {
				var out bytes.Buffer
				for b.Loop() {
					out.Reset()
					if _, err := reg.WriteSnapshotFor(&out, accepts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(out.Len()), "bytes")
			})
			b.Run("capture-file", func(b *testing.B) {
				var file bytes.Buffer
				for b.Loop() {
					file.Reset()
					if _, err := oldReg.WriteSnapshot(&file); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(file.Len()), "bytes")
			})
		})
	}
}

func newKV(tb testing.TB) *kvStore {
	tb.Helper()
	kv, err := newKVStore()
	if err != nil {
		tb.Fatal(err)
	}
	return kv
}

// kvRegistry is a registry with kv registered as the demo does.
func kvRegistry(tb testing.TB, kv *kvStore) *state.Registry {
	return registryWith(tb, kv.register)
}

// registryWith returns a new registry to which add registered its
// participants.
func registryWith(tb testing.TB, add func(*state.Registry) error) *state.Registry {
	tb.Helper()
	reg, err := state.NewRegistry(state.Options{})
	if err == nil {
		err = add(reg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// jsonKVRegistry registers kv's map as the builds before the binary codec
// did at schema 1: version 1, encoding/json of a flat copy.
func jsonKVRegistry(tb testing.TB, kv *kvStore) *state.Registry {
	return registryWith(tb, func(reg *state.Registry) error {
		return reg.Register(state.Participant{Name: "demo.kv", Version: kvJSONFlat,
			Capture: func(w io.Writer) error {
				kv.mu.Lock()
				defer kv.mu.Unlock()
				flat := make(map[string]string, len(kv.m))
				for k, e := range kv.m {
					flat[k] = e.Value
				}
				return json.NewEncoder(w).Encode(flat)
			},
			Restore: func(r io.Reader) error {
				var flat map[string]string
				if err := json.NewDecoder(r).Decode(&flat); err != nil {
					return err
				}
				m := make(map[string]kvEntry)
				for k, v := range flat {
					m[k] = kvEntry{Value: v}
				}
				kv.mu.Lock()
				kv.m = m
				kv.mu.Unlock()
				return nil
			}})
	})
}
