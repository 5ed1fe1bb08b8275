package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/tinylib/msgp/msgp"
)

// The section versions of demo.kv: the schema (kvSchema) and its encoding.
// Versions 1 and 2 are what builds before the binary codec wrote, in JSON;
// a build reads them through migrations, and writes version 1 for such a
// build (a rollback, or a state file it reads) through the steps down.
//
// The binary encoding is MessagePack, written and read with the primitives
// of github.com/tinylib/msgp (what its generated code calls): on the demo's
// 100,000 entries it encodes 17x and decodes 3x faster than encoding/json,
// and faster than gob, fxamacker/cbor and vmihailenco/msgpack
// (BenchmarkKVCodecCandidates in kv_codec_test.go; BENCHMARKS.md).
const (
	kvJSONFlat   uint32 = 1 // schema 1, JSON: {"key": "value"}
	kvJSONGen    uint32 = 2 // schema 2, JSON: {"key": {"value": "v", "gen": 3}}
	kvFlat       uint32 = 4 // schema 1: a map of key -> value
	kvGen        uint32 = 5 // schema 2: a map of key -> [value, gen]
	kvUnreadable uint32 = 6 // schema 3: as kvGen, and it reads no other version
)

// kvVersion is the section version a build of schema writes.
func kvVersion(schema uint32) uint32 {
	switch schema {
	case 1:
		return kvFlat
	case 2:
		return kvGen
	default:
		return kvUnreadable
	}
}

// appendKV encodes m: a map of key -> value, or with gens of key ->
// [value, gen].
func appendKV(b []byte, m map[string]kvEntry, gens bool) []byte {
	b = msgp.AppendMapHeader(b, uint32(len(m)))
	for k, e := range m {
		b = appendEntry(b, k, e, gens)
	}
	return b
}

func appendEntry(b []byte, k string, e kvEntry, gens bool) []byte {
	b = msgp.AppendString(b, k)
	if !gens {
		return msgp.AppendString(b, e.Value)
	}
	b = msgp.AppendArrayHeader(b, 2)
	b = msgp.AppendString(b, e.Value)
	return msgp.AppendInt(b, e.Gen)
}

// writeKV writes what appendKV returns to w in pieces of about 64 KiB, so
// that the capture holds no second copy of the whole map.
func writeKV(w io.Writer, m map[string]kvEntry, gens bool) error {
	const piece = 64 << 10
	b := msgp.AppendMapHeader(make([]byte, 0, 2*piece), uint32(len(m)))
	for k, e := range m {
		if b = appendEntry(b, k, e, gens); len(b) >= piece {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	_, err := w.Write(b)
	return err
}

// readKV reads a whole section from r.
func readKV(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeKV decodes what appendKV wrote.
func decodeKV(b []byte, gens bool) (map[string]kvEntry, error) {
	n, err := checkKV(b, gens)
	if err != nil {
		return nil, err
	}
	m, _ := buildKV(b, gens, n)
	return m, nil
}

// checkKV walks what appendKV wrote without building anything and returns
// its number of entries: buildKV cannot fail on bytes it accepted. It is
// the part of decoding that can fail, and a fraction of its time.
func checkKV(b []byte, gens bool) (int, error) {
	n := 0
	err := walkKV(b, gens, nil, func(string, kvEntry) { n++ })
	return n, err
}

// buildKV decodes bytes that checkKV accepted, holding n entries. Every
// key and value is a substring of one string holding the whole encoding:
// one allocation instead of two per entry, which is most of the decoding
// time otherwise. The string stays alive while any entry from it does, a
// few bytes of framing per entry beyond the entries themselves.
//
// It also returns that string: the encoding of the map it built, which a
// capture can send again as it is (kvStore.capture).
func buildKV(b []byte, gens bool, n int) (map[string]kvEntry, string) {
	all := string(b)
	m := make(map[string]kvEntry, n)
	if err := walkKV(b, gens, &all, func(k string, e kvEntry) { m[k] = e }); err != nil {
		panic("kv: bytes that checkKV accepted fail to decode: " + err.Error())
	}
	return m, all
}

// writeKVOver writes an encoding of the map base encodes with n pairs,
// followed by the entries of changed (the keys set since) as m holds them:
// one map of n+len(changed) pairs in which a key of changed, coming after
// base, wins on decoding. It copies base instead of walking the map.
func writeKVOver(w io.Writer, base string, n int, changed []string, m map[string]kvEntry, gens bool) error {
	_, body, err := msgp.ReadMapHeaderBytes([]byte(base[:min(len(base), 5)]))
	if err != nil {
		return fmt.Errorf("kv base: %w", err)
	}
	header := min(len(base), 5) - len(body)
	b := msgp.AppendMapHeader(make([]byte, 0, 64<<10), uint32(n+len(changed)))
	if _, err := w.Write(b); err != nil {
		return err
	}
	if _, err := io.WriteString(w, base[header:]); err != nil {
		return err
	}
	b = b[:0]
	for _, k := range changed {
		b = appendEntry(b, k, m[k], gens)
	}
	_, err = w.Write(b)
	return err
}

// walkKV calls fn with each entry of b. With all (b as a string) the keys
// and values are its substrings; without, they are empty: only the
// structure is checked.
func walkKV(b []byte, gens bool, all *string, fn func(string, kvEntry)) error {
	n, rest, err := msgp.ReadMapHeaderBytes(b)
	if err != nil {
		return fmt.Errorf("kv map header: %w", err)
	}
	str := func() (string, error) {
		var v []byte
		v, rest, err = msgp.ReadStringZC(rest)
		if err != nil || all == nil {
			return "", err
		}
		end := len(b) - len(rest)
		return (*all)[end-len(v) : end], nil
	}
	for i := range n {
		k, err := str()
		if err != nil {
			return fmt.Errorf("kv entry %d: key: %w", i, err)
		}
		var e kvEntry
		if gens {
			var sz uint32
			if sz, rest, err = msgp.ReadArrayHeaderBytes(rest); err != nil || sz != 2 {
				return fmt.Errorf("kv entry %d: want [value, gen], got %d elements: %v", i, sz, err)
			}
		}
		if e.Value, err = str(); err != nil {
			return fmt.Errorf("kv entry %d: value: %w", i, err)
		}
		if gens {
			if e.Gen, rest, err = msgp.ReadIntBytes(rest); err != nil {
				return fmt.Errorf("kv entry %d: gen: %w", i, err)
			}
		}
		fn(k, e)
	}
	if len(rest) != 0 {
		return fmt.Errorf("kv: %d bytes after the map", len(rest))
	}
	return nil
}

// The migrations between the versions. Each decodes whole bytes and
// encodes whole bytes, as state.MigrateFunc does.

// migrateJSONFlat turns version 1 (JSON, builds before the binary codec)
// into 4, the same map in binary.
func migrateJSONFlat(old []byte) ([]byte, error) {
	var flat map[string]string
	if err := json.Unmarshal(old, &flat); err != nil {
		return nil, err
	}
	m := make(map[string]kvEntry, len(flat))
	for k, v := range flat {
		m[k] = kvEntry{Value: v}
	}
	return appendKV(nil, m, false), nil
}

// migrateToJSONFlat turns version 4 into 1, for a build before the binary
// codec.
func migrateToJSONFlat(cur []byte) ([]byte, error) {
	m, err := decodeKV(cur, false)
	if err != nil {
		return nil, err
	}
	flat := make(map[string]string, len(m))
	for k, e := range m {
		flat[k] = e.Value
	}
	return json.Marshal(flat)
}

// migrateJSONGen turns version 2 (JSON with gens) into 5.
func migrateJSONGen(old []byte) ([]byte, error) {
	var m map[string]kvEntry
	if err := json.Unmarshal(old, &m); err != nil {
		return nil, err
	}
	return appendKV(nil, m, true), nil
}

// migrateKV1to2 is the code_change from schema 1 to 2 (version 4 to 5):
// entries written by a generation that did not record one get gen -1.
func migrateKV1to2(old []byte) ([]byte, error) {
	m, err := decodeKV(old, false)
	if err != nil {
		return nil, err
	}
	for k, e := range m {
		e.Gen = -1
		m[k] = e
	}
	return appendKV(nil, m, true), nil
}

// migrateKV2to1 is the way back from schema 2 to 1 (version 5 to 4), for a
// rollback: the generations are dropped, the values kept.
func migrateKV2to1(cur []byte) ([]byte, error) {
	m, err := decodeKV(cur, true)
	if err != nil {
		return nil, err
	}
	return appendKV(nil, m, false), nil
}
