package state

import "hash/crc32"

// castagnoli is the CRC-32C table. hash/crc32 uses the SSE4.2 (amd64) or
// CRC32 (arm64) instructions for it, so checksumming costs far less than
// copying the bytes.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// The snapshot carries three checksums over the same payload bytes: one per
// chunk, one per section and one over the whole snapshot. Computing all
// three by running crc32.Update three times would read every byte three
// times. Instead each chunk is checksummed once and its CRC is folded into
// the section and whole-snapshot CRCs with crcCombine, which gives exactly
// the CRC-32C that a plain pass over the concatenated bytes would give. The
// algorithm is zlib's crc32_combine (multiplication modulo the polynomial).

// castagnoliReversed is the Castagnoli polynomial in reversed bit order, as
// hash/crc32 uses it.
const castagnoliReversed = 0x82f63b78

// x2nTable[k] is x^(2^k) modulo the polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < len(t); k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// multModP returns a*b modulo the polynomial, in reversed bit order.
func multModP(a, b uint32) uint32 {
	if a == 0 {
		return 0 // the loop below needs a set bit in a to stop
	}
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
}

// x8nModP returns x^(8n) modulo the polynomial: the operator that shifts a
// CRC over n zero bytes.
func x8nModP(n int64) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; k++ {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
		n >>= 1
	}
	return p
}

// chunkShift is x8nModP(maxChunk), precomputed because almost every chunk
// has that length.
var chunkShift = x8nModP(maxChunk)

// crcCombine returns the CRC-32C of a||b given crcA, the CRC-32C of a, crcB,
// the CRC-32C of b, and lenB, the length of b.
func crcCombine(crcA, crcB uint32, lenB int64) uint32 {
	op := chunkShift
	if lenB != maxChunk {
		op = x8nModP(lenB)
	}
	return multModP(op, crcA) ^ crcB
}
