package state

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// The benchmarks compare encoding and decoding with a plain copy of the
// same bytes: after every operation, with the timer stopped, the payload is
// copied once with copy(dst, src), so that both see the same machine load.
// x_copy is the operation's time over the copy's, copy_MB/s the copy's
// throughput. Run with
//
//	go test -run '^$' -bench .
//
// The 1 GiB cases need about 2 GiB of memory each.

var benchSizes = []struct {
	name string
	n    int
}{
	{"1MiB", 1 << 20},
	{"64MiB", 64 << 20},
	{"1GiB", 1 << 30},
}

// bigPattern returns n bytes of pattern, filled quickly by doubling.
func bigPattern(n int) []byte {
	p := make([]byte, n)
	m := copy(p, pattern(min(n, 1<<20), 1))
	for m < n {
		m += copy(p[m:], p[:m])
	}
	return p
}

// loopVsCopy runs op b.N times, each followed by an untimed copy of src to
// dst, and reports how op compares with the copy.
func loopVsCopy(b *testing.B, dst, src []byte, op func() error) {
	copy(dst, src) // fault the pages in before timing
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	var copies time.Duration
	b.ResetTimer()
	for b.Loop() {
		if err := op(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		start := time.Now()
		copy(dst, src)
		copies += time.Since(start)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed())/float64(copies), "x_copy")
	b.ReportMetric(float64(len(src))*float64(b.N)/copies.Seconds()/1e6, "copy_MB/s")
}

// sliceWriter appends to a preallocated slice, so that the destination of
// a benchmark costs no allocation or page fault.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func payloadRegistry(b *testing.B, src []byte) *Registry {
	b.Helper()
	reg := newRegistry(b, Options{})
	reg.Register(Participant{
		Name:    "payload",
		Capture: func(w io.Writer) error { _, err := w.Write(src); return err },
		Restore: func(io.Reader) error { return nil },
	})
	return reg
}

func BenchmarkEncode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			src := bigPattern(size.n)
			reg := payloadRegistry(b, src)
			w := &sliceWriter{b: make([]byte, size.n+size.n/maxChunk*chunkHeaderLen+4096)}
			loopVsCopy(b, w.b[:size.n], src, func() error {
				w.b = w.b[:0]
				_, err := reg.WriteSnapshot(w)
				return err
			})
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	restores := []struct {
		name    string
		restore func(dst []byte) func(io.Reader) error
	}{
		// One read of the whole payload into the application's buffer.
		{"readfull", func(dst []byte) func(io.Reader) error {
			return func(r io.Reader) error { _, err := io.ReadFull(r, dst); return err }
		}},
		// Reads of 32 KiB, as a typical decoder with a bufio.Reader does.
		{"read32k", func(dst []byte) func(io.Reader) error {
			return func(r io.Reader) error {
				for off := 0; off < len(dst); {
					n, err := r.Read(dst[off:min(off+32<<10, len(dst))])
					off += n
					if err != nil {
						return err
					}
				}
				return nil
			}
		}},
	}
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			snap := snapshotOf(b, payloadRegistry(b, bigPattern(size.n)))
			dst := make([]byte, size.n)
			for _, rs := range restores {
				b.Run(rs.name, func(b *testing.B) {
					reg := newRegistry(b, Options{})
					reg.Register(Participant{Name: "payload", Capture: func(io.Writer) error { return nil }, Restore: rs.restore(dst)})
					loopVsCopy(b, dst, snap[:size.n], func() error {
						_, err := reg.ReadSnapshot(bytes.NewReader(snap))
						return err
					})
				})
			}
		})
	}
}
