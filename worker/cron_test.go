package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("time zone %s: %v (is tzdata installed?)", name, err)
	}
	return loc
}

func mustCron(t *testing.T, expr, tz string) *cronSchedule {
	t.Helper()
	c, err := parseCron(expr, tz)
	if err != nil {
		t.Fatalf("parseCron(%q, %q): %v", expr, tz, err)
	}
	return c
}

// points returns the first n points of c after from.
func points(c *cronSchedule, from time.Time, n int) []time.Time {
	var out []time.Time
	for p := from; len(out) < n; {
		p = c.next(p)
		if p.IsZero() {
			break
		}
		out = append(out, p)
	}
	return out
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestCronFixedTimeAcrossDST: a daily job at a wall-clock time runs once a
// day across both changes in Paris and New York: at the change when the
// time is skipped, at its first occurrence when it is repeated. The
// parser's own Next, as its documentation says ("jobs scheduled during
// daylight-savings leap-ahead transitions will not be run"), skips the
// first, and it runs the second twice; both are checked, so that an
// upgrade of the parser that changes either shows here.
func TestCronFixedTimeAcrossDST(t *testing.T) {
	for _, c := range []struct {
		name, zone, expr, from string
		want                   []string // UTC
		parser                 []string // robfig's own Next, UTC
	}{
		{
			name: "paris spring", zone: "Europe/Paris", expr: "30 2 * * *", from: "2026-03-27T12:00:00Z",
			// 02:30 on 29 March does not exist: 02:00 CET became 03:00 CEST (01:00Z).
			want:   []string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"},
			parser: []string{"2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"},
		},
		{
			name: "paris fall", zone: "Europe/Paris", expr: "30 2 * * *", from: "2026-10-23T12:00:00Z",
			// 02:30 on 25 October comes twice: 00:30Z (CEST) and 01:30Z (CET).
			want:   []string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"},
			parser: []string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
		},
		{
			name: "new york spring", zone: "America/New_York", expr: "30 2 * * *", from: "2026-03-06T17:00:00Z",
			// 02:00 EST on 8 March became 03:00 EDT (07:00Z).
			want:   []string{"2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"},
			parser: []string{"2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"},
		},
		{
			name: "new york fall", zone: "America/New_York", expr: "30 1 * * *", from: "2026-10-30T17:00:00Z",
			// 01:30 on 1 November comes twice: 05:30Z (EDT) and 06:30Z (EST).
			want:   []string{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"},
			parser: []string{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"},
		},
		{
			// A half-hour change (+10:30 to +11): 02:15 on 4 October does not exist.
			name: "lord howe spring", zone: "Australia/Lord_Howe", expr: "15 2 * * *", from: "2026-10-02T00:00:00Z",
			want: []string{"2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"},
		},
		{
			// 01:45 on 5 April comes twice: 14:45Z (+11) and 15:15Z (+10:30).
			name: "lord howe fall", zone: "Australia/Lord_Howe", expr: "45 1 * * *", from: "2026-04-03T00:00:00Z",
			want: []string{"2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := mustCron(t, c.expr, c.zone)
			from := utc(c.from)
			for i, p := range points(s, from, len(c.want)) {
				if !p.Equal(utc(c.want[i])) {
					t.Errorf("point %d = %v, want %v", i, p.UTC(), c.want[i])
				}
			}
			raw, err := cron.ParseStandard("CRON_TZ=" + c.zone + " " + c.expr)
			if err != nil {
				t.Fatal(err)
			}
			p := from
			for i, w := range c.parser {
				p = raw.Next(p)
				if !p.Equal(utc(w)) {
					t.Errorf("parser point %d = %v, documented behaviour gives %v", i, p.UTC(), w)
				}
			}
		})
	}
}

// TestCronElapsedAcrossDST: an expression that fires in every hour keeps
// its spacing in elapsed time across both changes, with seconds and
// without: no run skipped in the repeated hour, none doubled.
func TestCronElapsedAcrossDST(t *testing.T) {
	for _, c := range []struct {
		zone, expr, around string
		step               time.Duration
	}{
		{"Europe/Paris", "*/15 * * * *", "2026-03-29T01:00:00Z", 15 * time.Minute},
		{"Europe/Paris", "*/15 * * * *", "2026-10-25T01:00:00Z", 15 * time.Minute},
		{"America/New_York", "0 * * * *", "2026-03-08T07:00:00Z", time.Hour},
		{"America/New_York", "0 * * * *", "2026-11-01T06:00:00Z", time.Hour},
		{"America/New_York", "*/5 * * * * *", "2026-11-01T06:00:00Z", 5 * time.Second},
		{"Europe/Paris", "*/5 * * * * *", "2026-03-29T01:00:00Z", 5 * time.Second},
	} {
		s := mustCron(t, c.expr, c.zone)
		change := utc(c.around)
		n := int(6 * time.Hour / c.step)
		if n > 2000 {
			n = 2000
		}
		pts := points(s, change.Add(-time.Duration(n/2)*c.step-time.Second), n)
		for i := 1; i < len(pts); i++ {
			if d := pts[i].Sub(pts[i-1]); d != c.step {
				t.Fatalf("%s %q around %s: %v then %v, %v apart, want %v", c.zone, c.expr, c.around, pts[i-1].UTC(), pts[i].UTC(), d, c.step)
			}
		}
		if len(pts) != n || pts[0].After(change) || pts[n-1].Before(change) {
			t.Fatalf("%s %q: %d points from %v to %v, want %d around the change", c.zone, c.expr, len(pts), pts[0], pts[len(pts)-1], n)
		}
	}
}

// TestCronTaskRunsOnceADayAcrossDST drives a supervisor on a fake clock
// minute by minute through New York's spring-forward day: the daily task
// at 02:30 runs once each day, at the change on the day 02:30 is skipped.
func TestCronTaskRunsOnceADayAcrossDST(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	clk := &fakeClock{t: time.Date(2026, 3, 7, 0, 0, 0, 0, ny)}
	s, _ := newTest(t, Options{now: clk.Now})
	var ran []time.Time
	mustAdd(t, s, Task{ID: "daily", Cron: "30 2 * * *", TimeZone: "America/New_York",
		Run: func(context.Context, *Run) error { ran = append(ran, clk.Now()); return nil }})
	for range 3 * 24 * 60 {
		clk.Advance(time.Minute)
		stepAll(t, s, 5)
	}
	want := []string{"2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}
	if len(ran) != len(want) {
		t.Fatalf("ran at %v, want %v", ran, want)
	}
	for i, w := range want {
		if !ran[i].Equal(utc(w)) {
			t.Errorf("run %d at %v, want %v", i+1, ran[i].UTC(), w)
		}
	}
}

func TestParseCronErrors(t *testing.T) {
	for _, c := range []struct{ expr, tz string }{
		{"not a cron", ""},
		{"* * * * *", "Mars/Olympus"},
		{"* * * * *", "Local"},
		{"@every 1s", ""},
		{"CRON_TZ=UTC * * * * *", ""},
		{"0 0 30 2 *", ""}, // 30 February never comes
		{"61 * * * *", ""},
	} {
		if _, err := parseCron(c.expr, c.tz); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("parseCron(%q, %q) = %v, want ErrInvalidTask", c.expr, c.tz, err)
		}
	}
	for _, expr := range []string{"* * * * *", "*/5 * * * * *", "@daily", "0 9 * * mon-fri"} {
		mustCron(t, expr, "Europe/Paris")
	}
}
