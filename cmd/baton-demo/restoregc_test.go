package main

import (
	"runtime/debug"
	"testing"
)

func TestParseRestoreGC(t *testing.T) {
	for _, tc := range []struct {
		in      string
		percent int
		keep    bool
		bad     bool
	}{
		{in: "off", percent: -1},
		{in: "keep", keep: true},
		{in: "400", percent: 400},
		{in: "0", bad: true},
		{in: "-1", bad: true},
		{in: "", bad: true},
		{in: "lots", bad: true},
	} {
		percent, keep, err := parseRestoreGC(tc.in)
		if (err != nil) != tc.bad || !tc.bad && (percent != tc.percent || keep != tc.keep) {
			t.Errorf("parseRestoreGC(%q) = %d, %v, %v", tc.in, percent, keep, err)
		}
	}
	if _, err := parseFlags([]string{"-restore-gc", "sometimes"}); err == nil {
		t.Error("-restore-gc sometimes accepted")
	}
}

// TestRestoreGCSetsBack: the collector's GOGC is what -restore-gc says
// during the restore, and what it was before once set back.
func TestRestoreGCSetsBack(t *testing.T) {
	prev := debug.SetGCPercent(150)
	defer debug.SetGCPercent(prev)
	for _, tc := range []struct {
		in     string
		during int
	}{{"off", -1}, {"400", 400}, {"keep", 150}} {
		back := restoreGC(tc.in)
		during := debug.SetGCPercent(-1)
		debug.SetGCPercent(during)
		back()
		after := debug.SetGCPercent(150)
		if during != tc.during || after != 150 {
			t.Errorf("-restore-gc %s: GOGC %d during the restore, %d after, want %d and 150", tc.in, during, after, tc.during)
		}
	}
}
