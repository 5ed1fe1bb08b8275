package main

import (
	"runtime/debug"
	"testing"
)

// TestParseRestoreGC: -restore-gc takes auto, off, keep or a percent of 1
// or more, and parseFlags refuses anything else.
func TestParseRestoreGC(t *testing.T) {
	good := map[string]int{"off": -1, "1": 1, "400": 400}
	for in, want := range good {
		if percent, keep, err := parseRestoreGC(in); percent != want || keep || err != nil {
			t.Errorf("parseRestoreGC(%q) = %d, %v, %v; want %d", in, percent, keep, err, want)
		}
	}
	if _, keep, err := parseRestoreGC("keep"); !keep || err != nil {
		t.Errorf("parseRestoreGC(keep) = %v, %v", keep, err)
	}
	if _, keep, err := parseRestoreGC("auto"); !keep || err != nil {
		t.Errorf("parseRestoreGC(auto) = %v, %v; want keep", keep, err)
	}
	for _, in := range []string{"0", "-1", "", "lots"} {
		if _, _, err := parseRestoreGC(in); err == nil {
			t.Errorf("parseRestoreGC(%q) accepted", in)
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
