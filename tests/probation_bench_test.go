package tests

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// BenchmarkProbationCost measures what a probation costs an upgrade that
// passes it, against none: each iteration is one upgrade of baton-demo with
// 200 tasks every 100 ms. switch-ms is the time from the SIGHUP to the first
// reply from the new process on a fresh connection; old-exit-ms, to the old
// process's exit; task-pause-ms, the worker's pause (its last run in the old
// process to its first in the new one, from `baton status`).
//
//	go test ./tests -run '^$' -bench BenchmarkProbationCost -benchtime 5x
func BenchmarkProbationCost(b *testing.B) {
	for _, p := range []time.Duration{0, time.Second} {
		b.Run("probation="+p.String(), func(b *testing.B) {
			dir := b.TempDir()
			ctl := filepath.Join(dir, "ctl.sock")
			s := demotest.StartEnv(b, nil, demoV1, dir, "-tasks", "200", "-task-interval", "100ms",
				"-probation", p.String(), "-control", ctl)
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			var switched, exited, paused time.Duration
			pauses := 0
			time.Sleep(500 * time.Millisecond) // the tasks run a few times first
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				old := s.Pid(b)
				start := time.Now()
				if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
					b.Fatal(err)
				}
				for {
					resp, err := c.Get(s.URL + "/")
					if err != nil {
						b.Fatalf("GET / during the upgrade: %v", err)
					}
					resp.Body.Close()
					if pid, _ := strconv.Atoi(resp.Header.Get("X-Pid")); pid != old {
						break
					}
					if time.Since(start) > 30*time.Second {
						b.Fatal("the new process never answered")
					}
				}
				switched += time.Since(start)
				if err := upgradertest.WaitExit(old, time.Minute); err != nil {
					b.Fatal(err)
				}
				exited += time.Since(start)
				// The tasks run in the new process once the old one has
				// exited (and, with a probation, committed).
				time.Sleep(300 * time.Millisecond)
				if d, ok := taskPause(b, ctl); ok {
					paused += d
					pauses++
				}
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(switched.Milliseconds())/n, "switch-ms")
			b.ReportMetric(float64(exited.Milliseconds())/n, "old-exit-ms")
			if pauses > 0 {
				b.ReportMetric(float64(paused.Milliseconds())/float64(pauses), "task-pause-ms")
			}
		})
	}
}

// taskPause reads the worker's last handoff pause from `baton status`, if
// the worker knows it.
func taskPause(b *testing.B, ctl string) (time.Duration, bool) {
	b.Helper()
	st := statusOf(b, ctl)
	var w struct {
		Handoff struct {
			Last  time.Time `json:"last_run_before_freeze"`
			First time.Time `json:"first_run_after_restore"`
		} `json:"handoff"`
	}
	raw, _ := json.Marshal(st.Components["worker"])
	if err := json.Unmarshal(raw, &w); err != nil {
		b.Fatal(err)
	}
	if w.Handoff.First.IsZero() || w.Handoff.Last.IsZero() {
		return 0, false
	}
	return w.Handoff.First.Sub(w.Handoff.Last), true
}
