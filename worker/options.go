package worker

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero fields of Options.
const (
	// DefaultWorkersPerCPU times GOMAXPROCS is the size of the runner pool.
	// Runs are expected to spend most of their time waiting on I/O.
	DefaultWorkersPerCPU = 4
	// DefaultInitialBackoff is the delay before the first retry of a failed run.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the delay between retries.
	DefaultMaxBackoff = time.Minute
	// DefaultFreezeTimeout bounds how long Freeze waits for runs in flight.
	DefaultFreezeTimeout = 5 * time.Second
	// DefaultStopTimeout bounds how long a stopping supervisor waits for a
	// cancelled run before abandoning it.
	DefaultStopTimeout = 5 * time.Second
	// DefaultResolution is how late a run may start so that the scheduler
	// wakes once for all the runs due within it.
	DefaultResolution = time.Millisecond
	// DefaultName is the name of the supervisor's snapshot section.
	DefaultName = "baton.worker"
)

// Options configure a Supervisor. The zero value is ready to use.
type Options struct {
	// Workers is the number of runner goroutines, the most periodic runs
	// in flight at once. A running loop has a goroutine of its own, as it
	// is one long call. Zero means GOMAXPROCS * DefaultWorkersPerCPU.
	Workers int

	// InitialBackoff is the delay before retrying a run that failed once;
	// it doubles with each further consecutive failure. Zero means
	// DefaultInitialBackoff.
	InitialBackoff time.Duration

	// MaxBackoff caps the retry delay. Zero means DefaultMaxBackoff.
	MaxBackoff time.Duration

	// FreezeTimeout bounds how long Freeze waits for runs in flight to
	// finish before it cuts them off. Zero means DefaultFreezeTimeout.
	FreezeTimeout time.Duration

	// StopTimeout bounds how long a stopping supervisor (Shutdown, or
	// Run's context done) waits for a run whose context was cancelled, be
	// it by the stop, the freeze bound or Remove, counted from the
	// cancellation. A run still in flight then is abandoned: Run returns
	// without it, so that a run that ignores its context cannot keep the
	// process from exiting. Zero means DefaultStopTimeout.
	StopTimeout time.Duration

	// Resolution is the scheduler's granularity: it wakes at the end of
	// a Resolution-long slot for every run due within it, so runs start up
	// to Resolution late (never early) and a busy supervisor wakes at most
	// once per Resolution instead of once per run. Zero means
	// DefaultResolution.
	Resolution time.Duration

	// Name is the snapshot section name returned by Participant: 1 to 64
	// bytes of [a-z0-9._-]. Zero means DefaultName. Give each supervisor in
	// a process its own name.
	Name string

	// Logger receives failures, panics and upgrade reports. Nil discards.
	Logger *slog.Logger

	// Registerer receives the supervisor's metrics. Nil means no metrics.
	// Two supervisors in one registry need prometheus.WrapRegistererWithPrefix
	// on one of them.
	Registerer prometheus.Registerer

	// now is the clock. Nil means time.Now. Tests set it to make schedule
	// arithmetic exact; the timer that wakes the scheduler is always real.
	now func() time.Time
}

// withDefaults returns o with zero fields replaced by defaults, or an error
// wrapping ErrInvalidOptions.
func (o Options) withDefaults() (Options, error) {
	if o.Workers < 0 || o.InitialBackoff < 0 || o.MaxBackoff < 0 || o.FreezeTimeout < 0 || o.StopTimeout < 0 || o.Resolution < 0 {
		return o, fmt.Errorf("%w: negative Workers, InitialBackoff, MaxBackoff, FreezeTimeout, StopTimeout or Resolution", ErrInvalidOptions)
	}
	if o.Workers == 0 {
		o.Workers = runtime.GOMAXPROCS(0) * DefaultWorkersPerCPU
	}
	if o.InitialBackoff == 0 {
		o.InitialBackoff = DefaultInitialBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.InitialBackoff {
		return o, fmt.Errorf("%w: MaxBackoff %v is below InitialBackoff %v", ErrInvalidOptions, o.MaxBackoff, o.InitialBackoff)
	}
	if o.FreezeTimeout == 0 {
		o.FreezeTimeout = DefaultFreezeTimeout
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Resolution == 0 {
		o.Resolution = DefaultResolution
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if !validName(o.Name) {
		return o, fmt.Errorf("%w: Name %q is not 1 to 64 bytes of [a-z0-9._-]", ErrInvalidOptions, o.Name)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
