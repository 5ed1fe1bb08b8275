package state

import (
	"hash/crc32"
	"testing"
)

func TestCRCCombine(t *testing.T) {
	data := pattern(3*maxChunk, 7)
	tests := []struct {
		name       string
		lenA, lenB int
	}{
		{"both empty", 0, 0},
		{"empty b", 10, 0},
		{"empty a", 0, 10},
		{"one byte each", 1, 1},
		{"odd sizes", 1000, 333},
		{"full chunk", 5, maxChunk},
		{"chunk plus one", maxChunk, maxChunk + 1},
		{"two chunks", maxChunk, 2 * maxChunk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := data[:tt.lenA], data[tt.lenA:tt.lenA+tt.lenB]
			want := crc32.Checksum(data[:tt.lenA+tt.lenB], castagnoli)
			got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), int64(len(b)))
			if got != want {
				t.Errorf("crcCombine = %#08x, want %#08x", got, want)
			}
		})
	}
}
