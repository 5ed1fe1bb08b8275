//go:build linux

package systemd_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/systemdtest"
)

func TestWatchdogEnabled(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name    string
		usec    string // "-" = unset
		pid     string // "-" = unset
		want    time.Duration
		wantErr error
	}{
		{"unset", "-", "-", 0, nil},
		{"no pid applies to us", "30000000", "-", 30 * time.Second, nil},
		{"our pid", "2500", self, 2500 * time.Microsecond, nil},
		{"another pid", "30000000", "1", 0, nil},
		{"zero", "0", self, 0, nil},
		{"usec not a number", "30s", self, 0, systemd.ErrInvalidWatchdog},
		{"usec negative", "-5", "-", 0, systemd.ErrInvalidWatchdog},
		{"usec overflows", "18446744073709551615", "-", 0, systemd.ErrInvalidWatchdog},
		{"pid not a number", "1000", "me", 0, systemd.ErrInvalidWatchdog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, systemd.EnvWatchdogUSec, tt.usec)
			setenv(t, systemd.EnvWatchdogPID, tt.pid)
			got, err := systemd.WatchdogEnabled()
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("WatchdogEnabled() = %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// setenv sets (or with "-" unsets) a variable for the duration of the test.
func setenv(t *testing.T, k, v string) {
	t.Helper()
	t.Setenv(k, v)
	if v == "-" {
		os.Unsetenv(k)
	}
}

func TestNewWatchdogHandsWatchdogPIDOn(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name    string
		pid     string
		keep    bool
		wantPID string // "-" = removed
	}{
		{"our pid is removed so a successor can use the watchdog", self, false, "-"},
		{"KeepEnvironment keeps it", self, true, self},
		{"another process's pid is left alone", "1", false, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := systemdtest.NewManager(t)
			setenv(t, systemd.EnvWatchdogUSec, "4000000")
			setenv(t, systemd.EnvWatchdogPID, tt.pid)
			w, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: m.Notifier(t), KeepEnvironment: tt.keep})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := os.LookupEnv(systemd.EnvWatchdogPID)
			if !ok {
				got = "-"
			}
			if got != tt.wantPID {
				t.Errorf("WATCHDOG_PID = %s, want %s", got, tt.wantPID)
			}
			if os.Getenv(systemd.EnvWatchdogUSec) != "4000000" {
				t.Error("WATCHDOG_USEC changed")
			}
			if tt.pid == self && (w.Timeout() != 4*time.Second || w.Interval() != 2*time.Second || !w.Enabled()) {
				t.Errorf("timeout %v interval %v enabled %v; want 4s, 2s, true", w.Timeout(), w.Interval(), w.Enabled())
			}
		})
	}
}

// TestWatchdogRun drives Run with a health check that fails on some ticks
// and checks that exactly the healthy ticks produced a WATCHDOG=1.
func TestWatchdogRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := systemdtest.NewAbstractManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// tick: 1 ok, 2 fail, 3 fail, 4 ok, 5 ok, 6 cancels and fails
	var (
		mu    sync.Mutex
		calls int
	)
	check := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 2, 3:
			return errors.New("stuck")
		case 6:
			cancel()
			return errors.New("cancelled")
		}
		return nil
	}
	w, err := systemd.NewWatchdog(systemd.WatchdogOptions{
		Notifier: m.Notifier(t),
		Timeout:  20 * time.Millisecond,
		Check:    check,
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.Interval() != 10*time.Millisecond {
		t.Fatalf("interval %v, want Timeout/2", w.Interval())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	// sendmsg on a unix datagram socket is synchronous: every ping Run
	// sent is queued by now
	for i := range 3 {
		if got := m.Recv(t).Data; got != systemd.NotifyWatchdog {
			t.Fatalf("ping %d: %q", i, got)
		}
	}
	m.ExpectNothing(t)
	if calls != 6 {
		t.Errorf("%d checks, want 6", calls)
	}
}

func TestWatchdogDisabledRunReturns(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := systemdtest.NewManager(t)
	tests := []struct {
		name      string
		usec, pid string // "-" = unset
		notifier  *systemd.Notifier
		timeout   time.Duration
	}{
		{"no WATCHDOG_USEC", "-", "-", m.Notifier(t), 0},
		{"another process's watchdog", "1000000", "1", m.Notifier(t), 0},
		{"no NOTIFY_SOCKET", "-", "-", &systemd.Notifier{}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, systemd.EnvWatchdogUSec, tt.usec)
			setenv(t, systemd.EnvWatchdogPID, tt.pid)
			w, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: tt.notifier, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			if w.Enabled() {
				t.Error("enabled")
			}
			w.Run(context.Background()) // returns at once, or the test times out
		})
	}
	m.ExpectNothing(t)
}

func TestNewWatchdogMalformedEnvironment(t *testing.T) {
	setenv(t, systemd.EnvWatchdogUSec, "soon")
	if _, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: &systemd.Notifier{}}); !errors.Is(err, systemd.ErrInvalidWatchdog) {
		t.Fatalf("NewWatchdog = %v, want ErrInvalidWatchdog", err)
	}
}
