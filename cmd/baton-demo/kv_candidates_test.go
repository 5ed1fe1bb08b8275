package main

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/tinylib/msgp/msgp"
	"github.com/vmihailenco/msgpack/v5"
)

// flatKV is the demo's schema-1 state with n entries, as seed makes it.
func flatKV(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("key-%05d", i)] = fmt.Sprintf("value-%d", i)
	}
	return m
}

type codec struct {
	name string
	enc  func(io.Writer, map[string]string) error
	dec  func(io.Reader) (map[string]string, error)
}

var kvCodecs = []codec{
	{"json", func(w io.Writer, m map[string]string) error { return json.NewEncoder(w).Encode(m) },
		func(r io.Reader) (map[string]string, error) {
			var m map[string]string
			return m, json.NewDecoder(r).Decode(&m)
		}},
	{"gob", func(w io.Writer, m map[string]string) error { return gob.NewEncoder(w).Encode(m) },
		func(r io.Reader) (map[string]string, error) {
			var m map[string]string
			return m, gob.NewDecoder(r).Decode(&m)
		}},
	{"cbor", func(w io.Writer, m map[string]string) error { return cbor.NewEncoder(w).Encode(m) },
		func(r io.Reader) (map[string]string, error) {
			var m map[string]string
			return m, cbor.NewDecoder(r).Decode(&m)
		}},
	{"msgpack", func(w io.Writer, m map[string]string) error { return msgpack.NewEncoder(w).Encode(m) },
		func(r io.Reader) (map[string]string, error) {
			var m map[string]string
			return m, msgpack.NewDecoder(r).Decode(&m)
		}},
	{"msgp", encodeFlatMsgp, decodeFlatMsgp},
}

func encodeFlatMsgp(w io.Writer, m map[string]string) error {
	mw := msgp.NewWriterSize(w, 64<<10)
	if err := mw.WriteMapHeader(uint32(len(m))); err != nil {
		return err
	}
	for k, v := range m {
		mw.WriteString(k)
		mw.WriteString(v)
	}
	return mw.Flush()
}

func decodeFlatMsgp(r io.Reader) (map[string]string, error) {
	mr := msgp.NewReaderSize(r, 64<<10)
	n, err := mr.ReadMapHeader()
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, min(n, 1<<20))
	for range n {
		k, err := mr.ReadString()
		if err != nil {
			return nil, err
		}
		v, err := mr.ReadString()
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

func BenchmarkKVCodecCandidates(b *testing.B) {
	m := flatKV(100_000)
	for _, c := range kvCodecs {
		var buf bytes.Buffer
		if err := c.enc(&buf, m); err != nil {
			b.Fatal(err)
		}
		enc := buf.Bytes()
		b.Run(c.name+"/encode", func(b *testing.B) {
			b.ReportMetric(float64(len(enc)), "bytes")
			var out bytes.Buffer
			out.Grow(2 * len(enc))
			for b.Loop() {
				out.Reset()
				if err := c.enc(&out, m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			for b.Loop() {
				got, err := c.dec(bytes.NewReader(enc))
				if err != nil || len(got) != len(m) {
					b.Fatal(err, len(got))
				}
			}
		})
	}
}
