//go:build unix

package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"testing"
)

// The rollback scenario: release 1 keeps a map of strings; release 2 keeps
// a generation beside each value, migrates 1 -> 2 when it reads release
// 1's state, and registers the way back, 2 -> 1, so that release 1 can read
// what release 2 wrote.

type entry2 struct {
	Value string `json:"value"`
	Gen   int    `json:"gen"`
}

// kv1 is release 1's participant: schema 1, no migrations.
type kv1 struct{ m map[string]string }

func (s *kv1) registry(t *testing.T) *Registry {
	t.Helper()
	return newRegistryWith(t, JSON("kv", 1, &s.m, nil))
}

// kv2 is release 2's participant: schema 2, with 1 -> 2 and 2 -> 1.
type kv2 struct{ m map[string]entry2 }

func (s *kv2) registry(t *testing.T) *Registry {
	t.Helper()
	reg := newRegistryWith(t, JSON("kv", 2, &s.m, nil))
	if err := reg.AddMigration("kv", 1, 2, func(old []byte) ([]byte, error) {
		var in map[string]string
		if err := json.Unmarshal(old, &in); err != nil {
			return nil, err
		}
		out := make(map[string]entry2, len(in))
		for k, v := range in {
			out[k] = entry2{Value: v, Gen: -1}
		}
		return json.Marshal(out)
	}); err != nil {
		t.Fatal(err)
	}
	// The way back drops what release 1 has no place for.
	if err := reg.AddMigration("kv", 2, 1, func(old []byte) ([]byte, error) {
		var in map[string]entry2
		if err := json.Unmarshal(old, &in); err != nil {
			return nil, err
		}
		out := make(map[string]string, len(in))
		for k, e := range in {
			out[k] = e.Value
		}
		return json.Marshal(out)
	}); err != nil {
		t.Fatalf("AddMigration 2 -> 1: %v", err)
	}
	return reg
}

// handOver sends src's state to dst over a socketpair, as an upgrade does:
// send is Send or one of its variants.
func handOver(t *testing.T, src, dst *Registry, send func(context.Context, *net.UnixConn, *Registry) (int64, error)) error {
	t.Helper()
	if err := src.CheckReadable(dst.Accepts()); err != nil {
		return fmt.Errorf("CheckReadable: %w", err)
	}
	c1, c2 := socketPair(t)
	sent := goSend(func() (int64, error) { return send(context.Background(), c1, src) })
	_, err := Receive(context.Background(), c2, dst)
	if r := <-sent; r.err != nil {
		return fmt.Errorf("send: %w", r.err)
	}
	return err
}

func TestRollbackHot(t *testing.T) {
	old := &kv1{m: map[string]string{"a": "1", "b": "2"}}
	next := &kv2{}
	if err := handOver(t, old.registry(t), next.registry(t), Send); err != nil {
		t.Fatalf("upgrade 1 -> 2: %v", err)
	}
	if want := (entry2{"1", -1}); next.m["a"] != want {
		t.Fatalf("release 2 holds %v, want a migrated %v", next.m, want)
	}
	next.m["c"] = entry2{"3", 2} // written by release 2

	back := &kv1{}
	if err := handOver(t, next.registry(t), back.registry(t), Send); err != nil {
		t.Fatalf("rollback 2 -> 1: %v", err)
	}
	if want := map[string]string{"a": "1", "b": "2", "c": "3"}; !maps.Equal(back.m, want) {
		t.Errorf("after v1 -> v2 -> v1 release 1 holds %v, want %v", back.m, want)
	}
}

func TestRollbackCold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.snap")
	old := &kv1{m: map[string]string{"a": "1", "b": "2"}}
	if _, err := WriteFile(path, old.registry(t)); err != nil {
		t.Fatal(err)
	}
	next := &kv2{}
	if _, err := ReadFile(path, next.registry(t)); err != nil {
		t.Fatalf("release 2 reads release 1's file: %v", err)
	}
	next.m["c"] = entry2{"3", 2}
	if _, err := WriteFile(path, next.registry(t)); err != nil {
		t.Fatal(err)
	}

	back := &kv1{}
	if _, err := ReadFile(path, back.registry(t)); err != nil {
		t.Fatalf("release 1 reads release 2's file: %v", err)
	}
	if want := map[string]string{"a": "1", "b": "2", "c": "3"}; !maps.Equal(back.m, want) {
		t.Errorf("after v1 -> v2 -> v1 release 1 holds %v, want %v", back.m, want)
	}
	// Release 2 reads its own file at its own version, generations kept.
	again := &kv2{}
	if _, err := ReadFile(path, again.registry(t)); err != nil {
		t.Fatalf("release 2 reads its own file: %v", err)
	}
	if want := (entry2{"3", 2}); again.m["c"] != want {
		t.Errorf("release 2 restored %v, want %v: the newest version is preferred", again.m["c"], want)
	}
}

// headerFlags returns the flags field of a snapshot.
func headerFlags(snap []byte) uint16 { return binary.BigEndian.Uint16(snap[10:]) }

// sendFor is SendFor to the reader that accepts a, as Send's signature.
func sendFor(a Accepts) func(context.Context, *net.UnixConn, *Registry) (int64, error) {
	return func(ctx context.Context, c *net.UnixConn, reg *Registry) (int64, error) {
		return SendFor(ctx, c, reg, a)
	}
}

func TestRollbackHotSendFor(t *testing.T) {
	next := &kv2{m: map[string]entry2{"a": {"1", -1}, "c": {"3", 2}}}
	back := &kv1{}
	backReg := back.registry(t)
	if err := handOver(t, next.registry(t), backReg, sendFor(backReg.Accepts())); err != nil {
		t.Fatalf("rollback 2 -> 1 with SendFor: %v", err)
	}
	if want := map[string]string{"a": "1", "c": "3"}; !maps.Equal(back.m, want) {
		t.Errorf("release 1 holds %v, want %v", back.m, want)
	}
	// Forward, SendFor sends release 2's own version: generations kept.
	again := &kv2{}
	againReg := again.registry(t)
	if err := handOver(t, next.registry(t), againReg, sendFor(againReg.Accepts())); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(again.m, next.m) {
		t.Errorf("release 2 -> 2 holds %v, want %v", again.m, next.m)
	}
}

func TestWriteSnapshotFor(t *testing.T) {
	next := &kv2{m: map[string]entry2{"a": {"1", 5}}}
	reg := next.registry(t)
	back := (&kv1{}).registry(t)

	// For release 1: one section, at version 1, and no alternates, so
	// that any reader of format 1, an older baton included, reads it.
	var buf bytes.Buffer
	if _, err := reg.WriteSnapshotFor(&buf, back.Accepts()); err != nil {
		t.Fatal(err)
	}
	info, err := back.Verify(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if headerFlags(buf.Bytes()) != 0 || len(info.Sections) != 1 || info.Sections[0].Version != 1 {
		t.Errorf("for release 1: flags %#x, sections %v; want no flags and kv at version 1", headerFlags(buf.Bytes()), info.Sections)
	}

	// For any reader: the section at 2, then its alternate at 1.
	snap := snapshotOf(t, reg)
	info, err = back.Verify(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	if headerFlags(snap) != flagAlternates || len(info.Sections) != 2 || info.Sections[0].Version != 2 || info.Sections[1].Version != 1 {
		t.Errorf("for any reader: flags %#x, sections %v; want alternates, kv at 2 then 1", headerFlags(snap), info.Sections)
	}

	// A registry without steps down writes what it always wrote.
	if snap := snapshotOf(t, back); headerFlags(snap) != 0 {
		t.Errorf("without steps down the flags are %#x, want 0", headerFlags(snap))
	}

	// A reader that reads neither version: refused, nothing written.
	buf.Reset()
	_, err = reg.WriteSnapshotFor(&buf, Accepts{Formats: []uint16{1}, Sections: map[string][]uint32{"kv": {7}}})
	if !errors.Is(err, ErrUnknownVersion) || buf.Len() != 0 {
		t.Errorf("WriteSnapshotFor an unable reader = %v after %d bytes, want ErrUnknownVersion and nothing written", err, buf.Len())
	}
	if err := reg.CheckReadable(back.Accepts()); err != nil {
		t.Errorf("CheckReadable(release 1) = %v, want nil: release 2 migrates down", err)
	}
}

// altSnapshot encodes sections as given, with the alternates flag.
func altSnapshot(t *testing.T, sections ...rawSection) []byte {
	t.Helper()
	return rawSnapshotFlags(t, flagAlternates, sections...)
}

func TestAlternates(t *testing.T) {
	tests := []struct {
		name     string
		snap     []byte
		wantErr  error
		wantA    string // what a (version 2) restored
		restored int
	}{
		{"newest readable first", altSnapshot(t, rawSection{"a", 2, []byte("two")}, rawSection{"a", 1, []byte("one")}), nil, "two", 1},
		{"newer skipped", altSnapshot(t, rawSection{"a", 3, []byte("three")}, rawSection{"a", 2, []byte("two")}), nil, "two", 1},
		{"none readable", altSnapshot(t, rawSection{"a", 4, []byte("four")}, rawSection{"a", 3, []byte("three")}, rawSection{"b", 1, nil}), ErrUnknownVersion, "", 0},
		{"none readable, last", altSnapshot(t, rawSection{"a", 4, []byte("four")}), ErrUnknownVersion, "", 0},
		{"not descending", altSnapshot(t, rawSection{"a", 2, []byte("two")}, rawSection{"a", 2, []byte("again")}), ErrDuplicateSection, "", 0},
		{"not consecutive", altSnapshot(t, rawSection{"a", 2, nil}, rawSection{"b", 1, nil}, rawSection{"a", 1, nil}), ErrDuplicateSection, "", 0},
		{"without the flag", rawSnapshot(t, rawSection{"a", 3, nil}, rawSection{"a", 2, nil}), ErrUnknownVersion, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := &blob{name: "a", version: 2}, &blob{name: "b", version: 1}
			_, err := newRegistry(t, Options{}, a, b).ReadSnapshot(bytes.NewReader(tt.snap))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadSnapshot = %v, want %v", err, tt.wantErr)
			}
			// On error a may have been restored and put back (a second
			// call): it holds nothing either way.
			if string(a.got) != tt.wantA || err == nil && a.restored != tt.restored {
				t.Errorf("a holds %q after %d Restore calls, want %q after %d", a.got, a.restored, tt.wantA, tt.restored)
			}
		})
	}
}
