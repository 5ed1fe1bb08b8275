package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// An encoder writes one snapshot to w as it is captured, never holding more
// than one chunk: the length of a section is not known until its Capture
// returns, so sections are sent as chunks ending with an empty one.
type encoder struct {
	ctx   context.Context
	w     io.Writer
	max   int64  // Options.MaxSize
	off   int64  // bytes written so far
	whole uint32 // CRC-32C of everything written so far
	count uint32 // sections written
	err   error  // sticky: the first failure ends the snapshot

	// buf holds a chunk header followed by up to maxChunk payload bytes,
	// so that a chunk goes out in one Write. It comes from chunkPool when
	// first needed: a Capture that writes whole megabytes never needs it.
	buf []byte
}

// chunkPool recycles chunk buffers of chunkHeaderLen+maxChunk bytes.
var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, chunkHeaderLen+maxChunk)
	return &b
}}

// getChunk returns a buffer of chunkHeaderLen+maxChunk bytes.
func getChunk() []byte { return *chunkPool.Get().(*[]byte) }

// putChunk returns a buffer from getChunk; nil is ignored.
func putChunk(b []byte) {
	if b != nil {
		b = b[:cap(b)]
		chunkPool.Put(&b)
	}
}

// release gives back the chunk buffer; the encoder is done. A writer that
// a Capture kept past its return gets errReleased from then on.
func (e *encoder) release() {
	if e.err == nil {
		e.err = errReleased
	}
	putChunk(e.buf)
	e.buf = nil
}

// pending returns the payload bytes buffered and not yet sent.
func (e *encoder) pending() int {
	if e.buf == nil {
		return 0
	}
	return len(e.buf) - chunkHeaderLen
}

func newEncoder(ctx context.Context, w io.Writer, max int64) *encoder {
	return &encoder{ctx: ctx, w: w, max: max}
}

// write sends framing bytes (everything but chunk payloads).
func (e *encoder) write(p []byte) error {
	if e.err != nil {
		return e.err
	}
	if e.off+int64(len(p)) > e.max {
		e.err = fmt.Errorf("%w: more than %d bytes (Options.MaxSize)", ErrTooLarge, e.max)
		return e.err
	}
	e.whole = crc32.Update(e.whole, castagnoli, p)
	n, err := e.w.Write(p)
	e.off += int64(n)
	if err != nil {
		e.err = err
	}
	return e.err
}

func (e *encoder) header(b Build, flags uint16) error {
	p := make([]byte, 0, 12+6*(1+maxField)+1+4)
	p = append(p, magic...)
	p = binary.BigEndian.AppendUint16(p, FormatVersion)
	p = binary.BigEndian.AppendUint16(p, flags)
	for _, s := range []string{b.Module, b.Version, b.Revision, b.Time, b.GoVersion, b.User} {
		p = append(p, byte(len(s)))
		p = append(p, s...)
	}
	var mod byte
	if b.Modified {
		mod = 1
	}
	p = append(p, mod)
	p = binary.BigEndian.AppendUint32(p, crc32.Checksum(p, castagnoli))
	return e.write(p)
}

// section writes one section whose payload is whatever capture writes.
// It returns the payload length.
func (e *encoder) section(name string, version uint32, capture func(io.Writer) error) (int64, error) {
	return e.tagged(tagSection, name, version, capture)
}

// tagged writes one section under tag: tagSection, or tagDelta for the
// delta of a pre-copied section.
func (e *encoder) tagged(tag byte, name string, version uint32, capture func(io.Writer) error) (int64, error) {
	p := make([]byte, 0, 2+maxName+8)
	p = append(p, tag, byte(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint32(p, version)
	p = binary.BigEndian.AppendUint32(p, crc32.Checksum(p, castagnoli))
	if err := e.write(p); err != nil {
		return 0, err
	}
	cw := &chunkWriter{e: e}
	if err := capture(cw); err != nil {
		if e.err != nil {
			// Capture failed because writing failed: report the cause.
			return cw.n, e.err
		}
		e.err = fmt.Errorf("capture: %w", err)
		return cw.n, e.err
	}
	if err := cw.flush(); err != nil {
		return cw.n, err
	}
	// The terminator is an empty chunk whose CRC field holds the
	// section's CRC, followed by the payload length.
	var t [chunkHeaderLen + 8]byte
	binary.BigEndian.PutUint32(t[4:], cw.crc)
	binary.BigEndian.PutUint64(t[8:], uint64(cw.n))
	if err := e.write(t[:]); err != nil {
		return cw.n, err
	}
	e.count++
	return cw.n, nil
}

// finish writes the trailer. It returns the snapshot's length.
func (e *encoder) finish() (int64, error) {
	var t [trailerLen]byte
	t[0] = tagEnd
	binary.BigEndian.PutUint32(t[1:], e.count)
	binary.BigEndian.PutUint64(t[5:], uint64(e.off+trailerLen))
	if err := e.write(t[:trailerLen-4]); err != nil {
		return e.off, err
	}
	if err := e.write(binary.BigEndian.AppendUint32(nil, e.whole)); err != nil {
		return e.off, err
	}
	return e.off, nil
}

// chunkWriter is the io.Writer a Capture writes to.
type chunkWriter struct {
	e   *encoder
	n   int64  // payload bytes of this section
	crc uint32 // CRC-32C of this section's payload
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	e := c.e
	if e.err != nil {
		return 0, e.err
	}
	written := 0
	for len(p) > 0 {
		if e.pending() == 0 && len(p) >= maxChunk {
			// A large write with nothing buffered: send full chunks
			// straight from p instead of copying them first.
			if err := c.emit(p[:maxChunk], false); err != nil {
				return written, err
			}
			p = p[maxChunk:]
			written += maxChunk
			continue
		}
		if e.buf == nil {
			e.buf = getChunk()[:chunkHeaderLen]
		}
		n := copy(e.buf[len(e.buf):cap(e.buf)], p)
		e.buf = e.buf[:len(e.buf)+n]
		p = p[n:]
		written += n
		if len(e.buf) == cap(e.buf) {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush sends the buffered payload, if any, as one chunk.
func (c *chunkWriter) flush() error {
	e := c.e
	if e.pending() == 0 {
		return e.err
	}
	err := c.emit(e.buf[chunkHeaderLen:], true)
	e.buf = e.buf[:chunkHeaderLen]
	return err
}

// emit sends data as one chunk. When data is the buffered payload, the
// header goes into the space reserved before it and the chunk is one Write.
func (c *chunkWriter) emit(data []byte, buffered bool) error {
	e := c.e
	if e.err != nil {
		return e.err
	}
	if err := e.ctx.Err(); err != nil {
		e.err = err
		return err
	}
	n := int64(len(data))
	if e.off+chunkHeaderLen+n > e.max {
		e.err = fmt.Errorf("%w: more than %d bytes (Options.MaxSize)", ErrTooLarge, e.max)
		return e.err
	}
	sum := crc32.Checksum(data, castagnoli)
	var h [chunkHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], uint32(n))
	binary.BigEndian.PutUint32(h[4:], sum)
	e.whole = crc32.Update(e.whole, castagnoli, h[:])
	e.whole = crcCombine(e.whole, sum, n)
	c.crc = crcCombine(c.crc, sum, n)
	c.n += n

	var err error
	var w int
	if buffered {
		copy(e.buf, h[:])
		w, err = e.w.Write(e.buf)
	} else {
		w, err = e.w.Write(h[:])
		if err == nil {
			var m int
			m, err = e.w.Write(data)
			w += m
		}
	}
	e.off += int64(w)
	if err != nil {
		e.err = err
	}
	return e.err
}
