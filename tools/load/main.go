// Command load drives a running kvproxy with a bounded load and reports
// throughput, latency percentiles, errors, token fetches and the proxy's
// memory. Every run is bounded by -d and -n.
//
//	go run ./cmd/kvproxy dev &
//	go run ./tools/load -c 64 -d 10s -pid "$(pgrep -f 'kvproxy dev' | tail -1)"
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvproxy/kvproxy/tools/internal/harness"
)

func main() {
	target := flag.String("url", "http://127.0.0.1:8380/secrets/db-password", "URL to GET through kvproxy")
	admin := flag.String("admin", "http://127.0.0.1:8381", "kvproxy admin base URL (for token metrics); empty to skip")
	conc := flag.Int("c", 32, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "how long to run (at most 5m)")
	maxN := flag.Int64("n", 2_000_000, "stop after this many requests")
	pid := flag.Int("pid", 0, "kvproxy's process id, to report its memory (VmRSS/VmHWM)")
	flag.Parse()
	if *dur > 5*time.Minute || *dur <= 0 || *conc < 1 || *conc > 4096 {
		fmt.Fprintln(os.Stderr, "load: -d must be in (0, 5m] and -c in [1, 4096]")
		os.Exit(2)
	}
	tokensBefore := tokenFetches(*admin)
	rssBefore := memory(*pid)

	client := &http.Client{Transport: &http.Transport{MaxIdleConns: *conc, MaxIdleConnsPerHost: *conc}, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var sent atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[int]int{}
	errs := 0
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			localCodes := map[int]int{}
			localErrs := 0
			for ctx.Err() == nil && sent.Add(1) <= *maxN {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
				req.Header.Set("Metadata", "true")
				t := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						localErrs++
					}
					continue
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck
				resp.Body.Close()
				local = append(local, time.Since(t))
				localCodes[resp.StatusCode]++
			}
			mu.Lock()
			lat = append(lat, local...)
			for c, n := range localCodes {
				codes[c] += n
			}
			errs += localErrs
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("requests   %d in %v with %d clients: %.0f req/s\n", len(lat), elapsed.Round(time.Millisecond), *conc, float64(len(lat))/elapsed.Seconds())
	fmt.Printf("latency    p50 %v  p90 %v  p99 %v  max %v\n", pct(.5), pct(.9), pct(.99), pct(1))
	fmt.Printf("status     %v  transport errors %d\n", codes, errs)
	if tokensBefore >= 0 {
		fmt.Printf("tokens     %d fetched during the run (kvproxy_token_acquisitions_total)\n", tokenFetches(*admin)-tokensBefore)
	}
	if *pid > 0 {
		fmt.Printf("memory     before: %s  after: %s\n", rssBefore, memory(*pid))
	}
}

// tokenFetches sums kvproxy_token_acquisitions_total, or -1.
func tokenFetches(admin string) int {
	if admin == "" {
		return -1
	}
	total, err := harness.MetricSum(admin, "kvproxy_token_acquisitions_total")
	if err != nil {
		return -1
	}
	return int(total)
}

// memory reads VmRSS and VmHWM of pid from /proc.
func memory(pid int) string {
	if pid <= 0 {
		return "-"
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unavailable"
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(out, ", ")
}
