package tests

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// BenchmarkTaskPause measures the work pause of an upgrade across real
// processes: from the last task run that finished in the old process to the
// first run that started in the new one, with n tasks every second whose
// runs are spread over the second by jitter (so some task is always due).
// It also reports the snapshot handoff as the old process logs it.
func BenchmarkTaskPause(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			p := demotest.Start(b, demoV1, "-tasks", strconv.Itoa(n), "-task-interval", "1s", "-task-jitter", "1s", "-kv-entries", "0")
			// Let the runs spread over the interval.
			time.Sleep(2500 * time.Millisecond)
			var pauses []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				u := p.Upgrade(b)
				if u.Err != "" {
					b.Fatal(u.Err)
				}
				if err := upgradertest.WaitExit(u.OldPid, time.Minute); err != nil {
					b.Fatal(err)
				}
				var pause time.Duration
				for deadline := time.Now().Add(10 * time.Second); pause == 0 && time.Now().Before(deadline); {
					pause = time.Duration(getTasks(b, p, "?limit=1").PauseNs)
				}
				if pause == 0 {
					b.Fatal("the new process never ran a task")
				}
				pauses = append(pauses, pause)
			}
			b.StopTimer()
			slices.Sort(pauses)
			b.ReportMetric(float64(pauses[len(pauses)/2].Microseconds())/1000, "pause-ms-median")
			b.ReportMetric(float64(pauses[len(pauses)-1].Microseconds())/1000, "pause-ms-max")
		})
	}
}
