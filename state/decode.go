package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A decoder reads one snapshot from r. It reads exactly the snapshot's
// bytes and nothing after them, so that r (a socket) can carry other
// messages afterwards. It never allocates according to a length read from
// the input beyond the format's bounds: a name is at most 255 bytes, a
// chunk at most maxChunk, and the total at most max.
type decoder struct {
	ctx   context.Context
	r     io.Reader
	max   int64  // Options.MaxSize
	off   int64  // bytes read so far
	whole uint32 // CRC-32C of everything read so far
	count uint32 // sections read
	flags uint16 // the header's flags
	err   error  // sticky: the first failure ends the snapshot
	buf   []byte // chunk buffer from chunkPool, taken when first needed
	cur   *sectionReader
}

// release gives back the chunk buffer. A reader that a Restore kept past
// its return gets errReleased from then on, never recycled bytes.
func (d *decoder) release() {
	if d.cur != nil {
		d.cur.chunk = nil
	}
	d.fail(errReleased)
	putChunk(d.buf)
	d.buf = nil
}

// errReleased is returned by encoders and decoders used after their
// snapshot was finished.
var errReleased = errors.New("state: snapshot reader or writer used after its call returned")

// readPiece is how much of a chunk is read at a time; see nextChunk.
const readPiece = 256 << 10

// sectionHeader is a section as announced before its payload.
type sectionHeader struct {
	name    string
	version uint32
	delta   bool // tagged tagDelta: a PreCopy.Delta
}

func newDecoder(ctx context.Context, r io.Reader, max int64) *decoder {
	return &decoder{ctx: ctx, r: r, max: max}
}

func (d *decoder) fail(err error) error {
	if d.err == nil {
		d.err = err
	}
	return d.err
}

func (d *decoder) corrupt(format string, args ...any) error {
	return d.fail(fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
}

// readRaw fills p from r without checksumming it.
func (d *decoder) readRaw(p []byte, what string) error {
	if d.err != nil {
		return d.err
	}
	if d.off+int64(len(p)) > d.max {
		return d.fail(fmt.Errorf("%w: %s at byte %d would pass the limit of %d bytes (Options.MaxSize)", ErrTooLarge, what, d.off, d.max))
	}
	n, err := io.ReadFull(d.r, p)
	d.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return d.corrupt("truncated at byte %d, reading %s", d.off, what)
		}
		return d.fail(fmt.Errorf("read %s at byte %d: %w", what, d.off, err))
	}
	return nil
}

// read fills p with framing bytes and adds them to the whole CRC.
func (d *decoder) read(p []byte, what string) error {
	if err := d.readRaw(p, what); err != nil {
		return err
	}
	d.whole = crc32.Update(d.whole, castagnoli, p)
	return nil
}

func (d *decoder) header() (Build, error) {
	var b Build
	// The header is checksummed as a whole once read; keep its bytes.
	h := make([]byte, 12, 12+6*(1+maxField)+1)
	if err := d.readRaw(h[:len(magic)], "magic"); err != nil {
		if errors.Is(err, ErrCorrupt) && d.off > 0 && string(h[:d.off]) != magic[:d.off] {
			// A short input that does not even start right is not a
			// truncated snapshot but something else.
			d.err = fmt.Errorf("%w: input starts with %q", ErrBadMagic, h[:d.off])
		}
		return b, d.err
	}
	if string(h[:len(magic)]) != magic {
		return b, d.fail(fmt.Errorf("%w: input starts with %q", ErrBadMagic, h[:len(magic)]))
	}
	if err := d.readRaw(h[len(magic):12], "format version"); err != nil {
		return b, err
	}
	if v := binary.BigEndian.Uint16(h[8:]); v != FormatVersion {
		return b, d.fail(fmt.Errorf("%w: snapshot format %d, this binary reads %d", ErrFormatVersion, v, FormatVersion))
	}
	fields := []*string{&b.Module, &b.Version, &b.Revision, &b.Time, &b.GoVersion, &b.User}
	var l [1]byte
	for _, f := range fields {
		if err := d.readRaw(l[:], "build info"); err != nil {
			return b, err
		}
		n := len(h)
		h = append(h, l[0])
		h = append(h, make([]byte, l[0])...)
		if err := d.readRaw(h[n+1:], "build info"); err != nil {
			return b, err
		}
		*f = string(h[n+1:])
	}
	if err := d.readRaw(l[:], "build info"); err != nil {
		return b, err
	}
	h = append(h, l[0])
	var sum [4]byte
	if err := d.readRaw(sum[:], "header checksum"); err != nil {
		return b, err
	}
	if binary.BigEndian.Uint32(sum[:]) != crc32.Checksum(h, castagnoli) {
		return b, d.corrupt("header checksum mismatch")
	}
	d.whole = crc32.Update(crc32.Update(0, castagnoli, h), castagnoli, sum[:])
	// The checksum matched, so these were written on purpose by a
	// writer that knows a format this one does not.
	d.flags = binary.BigEndian.Uint16(h[10:])
	if unknown := d.flags &^ knownFlags; unknown != 0 {
		return b, d.fail(fmt.Errorf("%w: unknown header flags %#04x", ErrFormatVersion, unknown))
	}
	if f := d.flags; f&(f-1) != 0 && f != flagPreCopy|flagDeltas {
		// More than one flag, but for a middle round of a pre-copy: a
		// writer of this format never combines them otherwise, so the
		// header was damaged before its CRC was made.
		return b, d.corrupt("header flags %#04x cannot be combined", f)
	}
	switch l[0] {
	case 0:
	case 1:
		b.Modified = true
	default:
		return b, d.fail(fmt.Errorf("%w: unknown modified flag %d", ErrFormatVersion, l[0]))
	}
	return b, nil
}

// next reads the next record: a section header, or the trailer, after
// which it reports end.
func (d *decoder) next() (h sectionHeader, end bool, err error) {
	if err := d.ctx.Err(); err != nil {
		return h, false, d.fail(err)
	}
	start := d.off
	var tag [1]byte
	if err := d.read(tag[:], "record tag"); err != nil {
		return h, false, err
	}
	switch {
	case tag[0] == tagSection:
		return d.sectionHeader(tag[0], start)
	case tag[0] == tagDelta && d.flags&flagDeltas != 0:
		h, end, err := d.sectionHeader(tag[0], start)
		h.delta = true
		return h, end, err
	case tag[0] == tagEnd:
		return h, true, d.trailer(start)
	default:
		return h, false, d.corrupt("unknown record tag %#02x at byte %d", tag[0], start)
	}
}

func (d *decoder) sectionHeader(tag byte, start int64) (h sectionHeader, end bool, err error) {
	p := make([]byte, 2, 2+maxField+8)
	p[0] = tag
	if err := d.read(p[1:2], "section name length"); err != nil {
		return h, false, err
	}
	n := int(p[1])
	if n == 0 || n > maxName {
		return h, false, d.corrupt("section name of %d bytes at byte %d (1 to %d allowed)", n, start, maxName)
	}
	p = p[:2+n+4]
	if err := d.read(p[2:], "section header"); err != nil {
		return h, false, err
	}
	var sum [4]byte
	if err := d.read(sum[:], "section header checksum"); err != nil {
		return h, false, err
	}
	if binary.BigEndian.Uint32(sum[:]) != crc32.Checksum(p, castagnoli) {
		return h, false, d.corrupt("section header checksum mismatch at byte %d", start)
	}
	h.name = string(p[2 : 2+n])
	h.version = binary.BigEndian.Uint32(p[2+n:])
	if !validName(h.name) {
		return h, false, d.corrupt("invalid section name %q at byte %d", h.name, start)
	}
	d.count++
	return h, false, nil
}

func (d *decoder) trailer(start int64) error {
	var t [trailerLen - 5]byte // count and total; the tag was read
	if err := d.read(t[:], "trailer"); err != nil {
		return err
	}
	want := d.whole
	var sum [4]byte
	if err := d.readRaw(sum[:], "trailer checksum"); err != nil {
		return err
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return d.corrupt("snapshot checksum mismatch")
	}
	if count := binary.BigEndian.Uint32(t[0:]); count != d.count {
		return d.corrupt("trailer counts %d sections, snapshot has %d", count, d.count)
	}
	if total := binary.BigEndian.Uint64(t[4:]); total != uint64(d.off) {
		return d.corrupt("trailer says %d bytes, snapshot has %d", total, d.off)
	}
	return nil
}

// section returns the reader of the payload of the section whose header
// next just returned.
func (d *decoder) section(name string) *sectionReader {
	d.cur = &sectionReader{d: d, name: name}
	return d.cur
}

// A sectionReader yields a section's payload, chunk by chunk. Every byte it
// returns has passed its chunk's checksum; the section's own checksum and
// length are checked when the terminator is reached, before io.EOF, so a
// reader that sees io.EOF has seen the whole section intact. Any failure is
// an error other than io.EOF, and it is sticky.
type sectionReader struct {
	d     *decoder
	name  string
	chunk []byte // verified bytes not yet returned
	n     int64  // payload bytes verified so far
	crc   uint32 // CRC-32C of those bytes
	done  bool   // terminator read and checked
}

func (s *sectionReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, s.d.err
	}
	for len(s.chunk) == 0 {
		if s.done {
			return 0, io.EOF
		}
		n, err := s.nextChunk(p)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
	n := copy(p, s.chunk)
	s.chunk = s.chunk[n:]
	return n, nil
}

// WriteTo hands each verified chunk to w without copying it first; io.Copy
// uses it.
func (s *sectionReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(s.chunk) > 0 {
			n, err := w.Write(s.chunk)
			total += int64(n)
			s.chunk = s.chunk[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if s.done {
			return total, nil
		}
		if _, err := s.nextChunk(nil); err != nil {
			return total, err
		}
	}
}

// discard reads and verifies the rest of the section.
func (s *sectionReader) discard() error {
	_, err := s.WriteTo(io.Discard)
	return err
}

// nextChunk reads the next chunk. If it fits in direct, it is read straight
// into it and its length returned: the caller's buffer is filled without a
// second copy, and the bytes count as returned only once verified.
// Otherwise it lands in s.chunk. At the terminator it checks the section
// and sets done.
func (s *sectionReader) nextChunk(direct []byte) (int, error) {
	d := s.d
	if d.err != nil {
		return 0, d.err
	}
	if err := d.ctx.Err(); err != nil {
		return 0, d.fail(err)
	}
	start := d.off
	var h [chunkHeaderLen]byte
	if err := d.read(h[:], "chunk header"); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(h[0:])
	want := binary.BigEndian.Uint32(h[4:])
	if n == 0 {
		var l [8]byte
		if err := d.read(l[:], "section length"); err != nil {
			return 0, err
		}
		if want != s.crc {
			return 0, d.corrupt("section %q: checksum mismatch", s.name)
		}
		if l := binary.BigEndian.Uint64(l[:]); l != uint64(s.n) {
			return 0, d.corrupt("section %q: %d payload bytes, its footer says %d", s.name, s.n, l)
		}
		s.done = true
		return 0, nil
	}
	if n > maxChunk {
		return 0, d.corrupt("section %q: chunk of %d bytes at byte %d (at most %d allowed)", s.name, n, start, maxChunk)
	}
	var data []byte
	if len(direct) >= int(n) {
		data = direct[:n]
	} else {
		if d.buf == nil {
			d.buf = getChunk() // bounded: a chunk's data fits whatever the input says
		}
		data = d.buf[:n]
	}
	// Read and checksum in pieces that stay in cache: a copy of 1 MiB or
	// more (runtime.memmove, used by most readers) bypasses the cache, and
	// the checksum would then read the chunk back from memory.
	var sum uint32
	for off := 0; off < len(data); off += readPiece {
		p := data[off:min(off+readPiece, len(data))]
		if err := d.readRaw(p, "chunk"); err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, p)
	}
	if sum != want {
		return 0, d.corrupt("section %q: chunk at byte %d: checksum mismatch", s.name, start)
	}
	d.whole = crcCombine(d.whole, sum, int64(n))
	s.crc = crcCombine(s.crc, sum, int64(n))
	s.n += int64(n)
	if len(direct) >= int(n) {
		return int(n), nil
	}
	s.chunk = data
	return 0, nil
}
