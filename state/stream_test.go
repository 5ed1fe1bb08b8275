package state

import (
	"hash/crc32"
	"io"
	"runtime"
	"testing"
)

// TestStreamingMemory moves a 128 MiB snapshot from Capture to Restore
// through a pipe, produced and consumed piecewise, and checks that the
// allocation is a few chunk buffers, not the snapshot.
func TestStreamingMemory(t *testing.T) {
	const size = 128 << 20
	piece := pattern(64<<10, 3)
	var want uint32
	for range size / len(piece) {
		want = crc32.Update(want, castagnoli, piece)
	}
	src := newRegistry(t, Options{})
	src.Register(Participant{
		Name: "big",
		Capture: func(w io.Writer) error {
			for range size / len(piece) {
				if _, err := w.Write(piece); err != nil {
					return err
				}
			}
			return nil
		},
		Restore: func(io.Reader) error { return nil },
	})
	var got uint32
	var n int64
	dst := newRegistry(t, Options{})
	dst.Register(Participant{
		Name:    "big",
		Capture: func(io.Writer) error { return nil },
		Restore: func(r io.Reader) error {
			buf := make([]byte, 32<<10)
			for {
				m, err := r.Read(buf)
				got = crc32.Update(got, castagnoli, buf[:m])
				n += int64(m)
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
			}
		},
	})

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := src.WriteSnapshot(pw)
		pw.CloseWithError(err)
		done <- err
	}()
	_, err := dst.ReadSnapshot(pr)
	pr.Close() // unblocks the writer if the reader failed
	werr := <-done
	runtime.ReadMemStats(&after)
	if err != nil || werr != nil {
		t.Fatalf("ReadSnapshot = %v, WriteSnapshot = %v", err, werr)
	}
	if n != size || got != want {
		t.Fatalf("restored %d bytes with CRC %#x, want %d with %#x", n, got, size, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("allocated %d bytes to stream %d", alloc, size)
	}
	t.Logf("allocated %d KiB to stream %d MiB", (after.TotalAlloc-before.TotalAlloc)>>10, size>>20)
}
