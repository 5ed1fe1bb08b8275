package tests

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkHTTPSSwitch measures upgrades under load in clear text and
// over TLS: the time from the signal to the first reply from the new
// process, how long the old one lived on, and the load's latencies (p50,
// p99) across the upgrades. Run it with -benchtime=1x:
//
//	go test ./tests -run '^$' -bench HTTPSSwitch -benchtime=1x
func BenchmarkHTTPSSwitch(b *testing.B) {
	const upgrades, workers = 10, 8
	for _, kind := range []string{"clear-h1", "tls-h1", "tls-h2"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				p, tlsAddr := startHTTPS(b)
				base, client := p.URL, goClient("h1")
				switch kind {
				case "tls-h1":
					base, client = "https://"+tlsAddr, goClient("h1-tls")
				case "tls-h2":
					base, client = "https://"+tlsAddr, goClient("h2")
				}
				var (
					mu   sync.Mutex
					lat  []time.Duration
					fail int
					wg   sync.WaitGroup
				)
				ctx, cancel := context.WithCancel(context.Background())
				for range workers {
					wg.Go(func() {
						for ctx.Err() == nil {
							start := time.Now()
							resp, err := client.Get(base + "/")
							if err == nil {
								io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
							}
							d := time.Since(start)
							mu.Lock()
							if err != nil || resp.StatusCode != 200 {
								fail++
							} else {
								lat = append(lat, d)
							}
							mu.Unlock()
							time.Sleep(2 * time.Millisecond)
						}
					})
				}
				var switches, exits []time.Duration
				for i := range upgrades {
					time.Sleep(100 * time.Millisecond)
					u := nextGenerationTimed(b, p, i, &exits)
					switches = append(switches, u.Serving)
				}
				cancel()
				wg.Wait()
				client.CloseIdleConnections()
				if fail != 0 {
					b.Errorf("%s: %d requests failed", kind, fail)
				}
				slices.Sort(lat)
				slices.Sort(switches)
				slices.Sort(exits)
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
				b.ReportMetric(ms(switches[len(switches)/2]), "switch-ms-median")
				b.ReportMetric(ms(exits[len(exits)/2]), "old-exit-ms-median")
				b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
				b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
				b.ReportMetric(float64(len(lat)), "requests")
			}
		})
	}
}
