package worker

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// This file holds cron schedules: github.com/robfig/cron/v3 parses the
// expression and finds the next matching time; this file only decides in
// which clock it looks, so that a daylight-saving change neither skips nor
// doubles a run.
//
// An expression that fires in every hour of the day ("*/5 * * * * *",
// "0 * * * *") follows elapsed time: across a change it keeps its spacing,
// as the parser does by itself (the repeated hour of a fall-back change
// has its runs, the missing hour of a spring-forward change has none, as
// it does not exist). An expression with fixed hours ("30 2 * * *") follows
// the wall clock and fires once per matching wall-clock time, as cron(8)
// does: a time that a spring-forward change skips runs at the change, a
// time that a fall-back change repeats runs at its first occurrence only.
// (The parser on its own would skip the first and double the second.)

// cronParser accepts five fields, or six with seconds first, and the
// descriptors (@daily, @hourly, ...) except @every, which is Task.Every.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// allHours is the Hour field of a SpecSchedule that fires in every hour.
const allHours = 1<<24 - 1

// cronSchedule is a parsed Task.Cron in its time zone.
type cronSchedule struct {
	loc *time.Location
	// spec matches in loc, for expressions that follow elapsed time; civil
	// matches wall-clock readings written as UTC times, for the others.
	spec, civil cron.SpecSchedule
	elapsed     bool
}

// parseCron parses expr in the IANA time zone tz ("" is UTC). Errors wrap
// ErrInvalidTask and say what is wrong.
func parseCron(expr, tz string) (*cronSchedule, error) {
	key := expr + "\x00" + tz
	if c, ok := parsed.Load(key); ok {
		return c.(*cronSchedule), nil
	}
	c, err := parseCronUncached(expr, tz)
	if err == nil && parsedCount.Add(1) <= maxParsed {
		parsed.Store(key, c)
	}
	return c, err
}

// parsed caches parsed schedules by expression and zone, up to maxParsed
// of them: a cronSchedule does not change once parsed, and tasks of a
// service share a few expressions, so that restoring 100k cron tasks
// parses each expression once.
var (
	parsed      sync.Map
	parsedCount atomic.Int64
)

const maxParsed = 4096

func parseCronUncached(expr, tz string) (*cronSchedule, error) {
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("%w: cron %q: give the time zone in TimeZone, not in the expression", ErrInvalidTask, expr)
	}
	loc, err := loadZone(tz)
	if err != nil {
		return nil, err
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: cron %q: %v", ErrInvalidTask, expr, err)
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%w: cron %q: @every is not a cron schedule; use Every", ErrInvalidTask, expr)
	}
	c := &cronSchedule{loc: loc, spec: *spec, civil: *spec, elapsed: spec.Hour&allHours == allHours}
	c.spec.Location, c.civil.Location = loc, time.UTC
	if c.next(time.Now()).IsZero() { // the parser looks five years ahead
		return nil, fmt.Errorf("%w: cron %q never fires", ErrInvalidTask, expr)
	}
	return c, nil
}

// loadZone loads an IANA time zone; "" is UTC.
func loadZone(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if tz == "Local" {
		return nil, fmt.Errorf("%w: time zone %q: name an IANA zone, such as Europe/Paris", ErrInvalidTask, tz)
	}
	if loc, ok := zones.Load(tz); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("%w: time zone %q: %v", ErrInvalidTask, tz, err)
	}
	zones.Store(tz, loc)
	return loc, nil
}

// zones caches the loaded time zones by name: time.LoadLocation reads
// and parses the zone's file each time, which made restoring 100k cron
// tasks take seconds. It holds at most the few hundred IANA zones.
var zones sync.Map

// next returns the first time after after that the schedule fires, or the
// zero time if it does not within five years (the parser's horizon).
func (c *cronSchedule) next(after time.Time) time.Time {
	if c.elapsed {
		return c.spec.Next(after)
	}
	civ := civilOf(after.In(c.loc))
	// A wall-clock time that maps before after is one a fall-back change
	// repeats and that was served at its first occurrence: look past it.
	// Two steps are enough; the bound is a guard.
	for range 8 {
		n := c.civil.Next(civ)
		if n.IsZero() {
			return n
		}
		if t := c.fromCivil(n); t.After(after) {
			return t
		}
		civ = n
	}
	return time.Time{}
}

// civilOf returns t's wall-clock reading as a UTC time.
func civilOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// fromCivil returns the instant at which the wall clock of c's zone reads
// n: the first of two in a fall-back change, the change itself for a
// reading that a spring-forward change skips.
func (c *cronSchedule) fromCivil(n time.Time) time.Time {
	t := time.Date(n.Year(), n.Month(), n.Day(), n.Hour(), n.Minute(), n.Second(), n.Nanosecond(), c.loc)
	start, end := t.ZoneBounds()
	if got := civilOf(t); !got.Equal(n) {
		// In a gap: time.Date moved the reading by the change's size,
		// one way or the other; the change is the zone bound between.
		if got.After(n) {
			return start
		}
		return end
	}
	if start.IsZero() {
		return t
	}
	_, off := t.Zone()
	_, prev := start.Add(-time.Nanosecond).Zone()
	if prev > off {
		// Just after a fall-back change: the same reading may have come
		// once before, in the zone that ended at start.
		if e := t.Add(-time.Duration(prev-off) * time.Second); e.Before(start) && civilOf(e).Equal(n) {
			return e
		}
	}
	return t
}
