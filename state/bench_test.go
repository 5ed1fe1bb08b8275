package state

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
)

// The benchmarks compare encoding and decoding with a plain copy of the
// same bytes, measured in the same run: the x_copy metric is the time of
// one encode (or decode) divided by the time of one copy(dst, src) of the
// payload. Run with
//
//	go test -run '^$' -bench . -benchtime 3x
//
// The 1 GiB cases need about 4 GiB of memory.

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

// copyTime is the best of a few copies of src into dst: the baseline.
func copyTime(dst, src []byte) time.Duration {
	best := time.Duration(1 << 62)
	for range 5 {
		start := time.Now()
		copy(dst, src)
		best = min(best, time.Since(start))
	}
	return best
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
			baseline := copyTime(w.b, src)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.b = w.b[:0]
				if _, err := reg.WriteSnapshot(w); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(nsPerOp(b)/float64(baseline.Nanoseconds()), "x_copy")
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
		src := bigPattern(size.n)
		snap := snapshotOf(b, payloadRegistry(b, src))
		src = nil
		for _, rs := range restores {
			b.Run(fmt.Sprintf("%s/%s", size.name, rs.name), func(b *testing.B) {
				dst := make([]byte, size.n)
				baseline := copyTime(dst, snap[:size.n])
				reg := newRegistry(b, Options{})
				reg.Register(Participant{Name: "payload", Capture: func(io.Writer) error { return nil }, Restore: rs.restore(dst)})
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := reg.ReadSnapshot(bytes.NewReader(snap)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(nsPerOp(b)/float64(baseline.Nanoseconds()), "x_copy")
			})
		}
	}
}

func nsPerOp(b *testing.B) float64 {
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}
