package tests

import (
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// BenchmarkHandoff64MiB measures the state handoff across two real
// processes: capture in the old one, sealed memfd over the handoff socket,
// decode, checksum and restore in the new one. Each iteration is one
// upgrade of a service whose state is 64 MiB. The copy baseline in the same
// run is a plain copy of the same bytes.
func BenchmarkHandoff64MiB(b *testing.B) {
	const size = 64 << 20
	bin := filepath.Join(b.TempDir(), "handoffbench")
	if err := demotest.Build("./tests/handoffbench", bin, demotest.BuildOpts{Version: "bench"}); err != nil {
		b.Fatal(err)
	}
	b.Run("handoff", func(b *testing.B) {
		dir := b.TempDir()
		p := demotest.StartCmd(b, bin, dir, "-size", strconv.Itoa(size), "-pidfile", filepath.Join(dir, "demo.pid"))
		b.SetBytes(size)
		b.ResetTimer()
		var total time.Duration
		for i := 0; i < b.N; i++ {
			pid := p.Pid(b)
			mark := p.Logs.Len()
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				b.Fatal(err)
			}
			line, err := p.Logs.WaitFrom(mark, time.Minute, upgradertest.Match{Msg: "handoff measured"})
			if err != nil {
				b.Fatalf("%v\n%s", err, p.Logs)
			}
			ns, _ := strconv.ParseInt(line.Fields["handoff_ns"], 10, 64)
			total += time.Duration(ns)
			if err := upgradertest.WaitExit(pid, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		// The wall time per op includes starting the process; the
		// handoff itself is reported on its own.
		b.ReportMetric(float64(size)*float64(b.N)/total.Seconds()/(1<<20), "handoff-MiB/s")
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "handoff-ns/op")
	})
	b.Run("copy", func(b *testing.B) {
		src, dst := make([]byte, size), make([]byte, size)
		for i := range src {
			src[i] = byte(i)
		}
		b.SetBytes(size)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			copy(dst, src)
		}
	})
}
