package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
)

// tzType is one local time type of a zone file: its offset east of UTC,
// whether it is daylight-saving time, its abbreviation.
type tzType struct {
	off   int32
	dst   bool
	abbr  string
	index uint8 // into the abbreviation bytes, set by tzif
}

// tzif writes a version 2 TZif zone file (RFC 8536) with the given
// transitions, at[i] switching to type idx[i], and no footer rule: after
// the last transition its type holds. The version 1 block carries the
// same data in 32-bit times, as the RFC asks of a writer.
func tzif(types []tzType, at []time.Time, idx []uint8) []byte {
	var chars []byte
	for i := range types {
		types[i].index = uint8(len(chars))
		chars = append(append(chars, types[i].abbr...), 0)
	}
	var b bytes.Buffer
	be := func(v any) { binary.Write(&b, binary.BigEndian, v) }
	block := func(version byte, wide bool) {
		b.WriteString("TZif")
		b.WriteByte(version)
		b.Write(make([]byte, 15))
		// isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
		for _, n := range []int{0, 0, 0, len(at), len(types), len(chars)} {
			be(uint32(n))
		}
		for _, t := range at {
			if wide {
				be(t.Unix())
			} else {
				be(int32(t.Unix()))
			}
		}
		b.Write(idx)
		for _, ty := range types {
			be(ty.off)
			if ty.dst {
				b.WriteByte(1)
			} else {
				b.WriteByte(0)
			}
			b.WriteByte(ty.index)
		}
		b.Write(chars)
	}
	block('2', false)
	block('2', true)
	b.WriteString("\n\n") // an empty footer: no rule after the last transition
	return b.Bytes()
}

// TestDataTaskDSTRealClock: cron tasks of a zone whose daylight-saving
// changes come a few seconds from now, on the real clock, across an
// upgrade. The zone (Test/Jump, in a ZONEINFO directory the service reads
// it from) springs forward by 4 s at t1 and falls back by 4 s at t2, so
// that the wall clock skips four seconds and then repeats four. The
// worker's rules (worker/cron.go) and robfig/cron's behaviour say:
//   - "* * * * * *" fires in every hour: it follows elapsed time and runs
//     every second across both changes, as the parser does by itself;
//   - the same with fixed hours follows the wall clock as cron(8) does: no
//     burst at the spring change, and the four repeated wall seconds of
//     the fall-back change do not run a second time;
//   - a fixed wall second that the spring change skips runs at the change;
//   - a fixed wall second that the fall-back change repeats runs at its
//     first occurrence only, and then next on the next day.
func TestDataTaskDSTRealClock(t *testing.T) {
	const zone, jump = "Test/Jump", 4 * time.Second
	dir := t.TempDir()
	zoneDir := filepath.Join(dir, "zoneinfo")
	logPath := filepath.Join(dir, "tasks.log")
	p := demotest.StartEnv(t, []string{"ZONEINFO=" + zoneDir}, demoV1, dir, "-task-log", logPath, "-drain", "1s")

	// The zone is written once the service serves (it loads a zone when a
	// task first names it), so that its changes do not pass during start.
	base := time.Now().Truncate(time.Second)
	t1, t2 := base.Add(3*time.Second), base.Add(9*time.Second)
	data := tzif([]tzType{{0, false, "TST", 0}, {int32(jump / time.Second), true, "TDT", 0}},
		[]time.Time{t1, t2}, []uint8{1, 0})
	// Go's own parser reads the file as meant.
	loc, err := time.LoadLocationFromTZData(zone, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		off  int
		name string
	}{{t1.Add(-time.Second), 0, "TST"}, {t1, 4, "TDT"}, {t2.Add(-time.Second), 4, "TDT"}, {t2, 0, "TST"}, {t2.Add(48 * time.Hour), 0, "TST"}} {
		if name, off := c.at.In(loc).Zone(); off != c.off || name != c.name {
			t.Fatalf("the written zone at %v: %s %+d, want %s %+d", c.at, name, off, c.name, c.off)
		}
	}
	if s, e := t1.In(loc).ZoneBounds(); !s.Equal(t1) || !e.Equal(t2) {
		t.Fatalf("the written zone's daylight time is [%v, %v), want [%v, %v)", s, e, t1, t2)
	}
	if err := os.MkdirAll(filepath.Join(zoneDir, "Test"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(zoneDir, zone), data, 0o644); err != nil {
		t.Fatal(err)
	}

	// Wall-clock readings (offset 0 before t1, as UTC): the spring change
	// skips [t1, t1+4s); the fall-back change repeats [t2, t2+4s), first
	// from t2-4s to t2, then from t2 on.
	wall := func(w time.Time) string { // "sec min hour" of a wall reading
		w = w.UTC()
		return fmt.Sprintf("%d %d %d", w.Second(), w.Minute(), w.Hour())
	}
	skipped, repeated := t1.Add(2*time.Second), t2.Add(2*time.Second)
	h := base.UTC().Hour()
	for _, b := range []map[string]any{
		{"id": "dst-elapsed", "kind": "demo.count", "cron": "* * * * * *", "tz": zone},
		{"id": "dst-wall", "kind": "demo.count", "cron": fmt.Sprintf("* * %d,%d * * *", h, (h+1)%24), "tz": zone},
		{"id": "dst-skipped", "kind": "demo.count", "cron": wall(skipped) + " * * *", "tz": zone},
		{"id": "dst-repeated", "kind": "demo.count", "cron": wall(repeated) + " * * *", "tz": zone},
	} {
		if code, d := taskCall(t, "POST", p.URL+"/tasks", b); code != http.StatusCreated {
			t.Fatalf("POST %v: %d %s", b, code, d.Error)
		}
	}
	if time.Now().After(t1.Add(-500 * time.Millisecond)) {
		t.Fatalf("the tasks were created too late: %v, the spring change is at %v", time.Since(base), t1)
	}
	// Next run times as planned: the skipped second at the change, the
	// repeated one at its first occurrence (wall t2+2s at offset +4s).
	firstRepeat := repeated.Add(-jump)
	if _, d := taskCall(t, "GET", p.URL+"/tasks/dst-skipped", nil); !d.NextRun.Equal(t1) {
		t.Errorf("dst-skipped: next run %v, want the change %v", d.NextRun, t1)
	}
	if _, d := taskCall(t, "GET", p.URL+"/tasks/dst-repeated", nil); !d.NextRun.Equal(firstRepeat) {
		t.Errorf("dst-repeated: next run %v, want its first occurrence %v", d.NextRun, firstRepeat)
	}

	// An upgrade inside the daylight time: the next run times travel as data.
	time.Sleep(time.Until(t1.Add(700 * time.Millisecond)))
	upStart := time.Now()
	u := p.Upgrade(t)
	if u.Err != "" {
		t.Fatalf("upgrade: %s", u.Err)
	}
	upEnd := time.Now()
	if upEnd.After(firstRepeat.Add(-time.Second)) {
		t.Fatalf("the upgrade took %v, past the window", upEnd.Sub(upStart))
	}

	time.Sleep(time.Until(t2.Add(6 * time.Second)))
	if _, d := taskCall(t, "GET", p.URL+"/tasks/dst-repeated", nil); d.Runs != 1 || !d.NextRun.Equal(repeated.Add(24*time.Hour)) {
		t.Errorf("dst-repeated after the window: %d runs, next %v; want 1 run and next at wall %v on the next day, %v",
			d.Runs, d.NextRun, wall(repeated), repeated.Add(24*time.Hour))
	}
	if _, d := taskCall(t, "GET", p.URL+"/tasks/dst-skipped", nil); d.Runs != 1 || !d.NextRun.Equal(skipped.Add(24*time.Hour)) {
		t.Errorf("dst-skipped after the window: %d runs, next %v; want 1 run, next at %v", d.Runs, d.NextRun, skipped.Add(24*time.Hour))
	}

	stopAndWait(t, p) // the task log is written out as a process ends
	runs := readTaskLog(t, logPath)
	const slack = 400 * time.Millisecond
	// near reports whether a run started at want, within the slack.
	near := func(got, want time.Time) bool { return !got.Before(want) && got.Sub(want) < slack }
	upgrading := func(s time.Time) bool {
		return !s.Before(upStart.Add(-time.Second)) && s.Before(upEnd.Add(time.Second))
	}
	for id, rs := range runs {
		for i, r := range rs {
			if r.seq != uint64(i+1) {
				t.Errorf("%s: run %d has seq %d: a gap or a duplicate", id, i+1, r.seq)
			}
		}
	}
	one := func(id string, want time.Time) {
		rs := runs[id]
		if len(rs) != 1 || !near(rs[0].at, want) {
			t.Errorf("%s: runs %v, want one at %v", id, rs, want)
		}
	}
	one("dst-skipped", t1)
	one("dst-repeated", firstRepeat)

	// The every-second tasks: which whole seconds from t1-2s to t2+5s
	// have a run; those the upgrade overlaps may be late and are not
	// asked for, but none may run twice.
	perSecond := func(id string) map[int]int {
		n := map[int]int{}
		for _, r := range runs[id] {
			s := r.at.Truncate(time.Second)
			if near(r.at, s) {
				n[int(s.Sub(t1)/time.Second)]++
			} else if !upgrading(s) {
				t.Errorf("%s: a run at %v, not on a second", id, r.at)
			}
		}
		return n
	}
	for _, c := range []struct {
		id    string
		quiet func(s int) bool // seconds with no run, counted from t1
	}{
		{"dst-elapsed", func(int) bool { return false }},
		{"dst-wall", func(s int) bool { d := time.Duration(s) * time.Second; return d >= t2.Sub(t1) && d < t2.Sub(t1)+jump }},
	} {
		n := perSecond(c.id)
		for s := -2; s <= int((t2.Sub(t1)+5*time.Second)/time.Second); s++ {
			at := t1.Add(time.Duration(s) * time.Second)
			switch {
			case n[s] > 1:
				t.Errorf("%s: %d runs at %v (t1%+ds)", c.id, n[s], at, s)
			case c.quiet(s) && n[s] != 0:
				t.Errorf("%s: a run at %v (t1%+ds), a repeated wall second already served", c.id, at, s)
			case !c.quiet(s) && n[s] == 0 && !upgrading(at):
				t.Errorf("%s: no run at %v (t1%+ds)", c.id, at, s)
			}
		}
	}
	if t.Failed() {
		t.Logf("t1 %v, t2 %v, upgrade %v..%v", t1, t2, upStart, upEnd)
		for _, id := range []string{"dst-elapsed", "dst-wall"} {
			for _, r := range runs[id] {
				t.Logf("%s seq %d pid %d at t1%+.3fs", id, r.seq, r.pid, r.at.Sub(t1).Seconds())
			}
		}
	}
}
