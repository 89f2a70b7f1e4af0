package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// sample is what the soak saw of kvproxy at one moment of the run.
type sample struct {
	at         time.Duration // since the load started
	requests   int64         // finished so far
	errors     int64         // failed so far
	rps        float64       // requests finished per second since the previous sample
	p50, p99   float64       // ms from when they were due, of the requests finished since the previous sample
	rssMiB     float64       // kvproxy's VmRSS
	goroutines int           // kvproxy's go_goroutines; -1 when /metrics could not be read
	fetches    int           // token requests the identity endpoint has received since kvproxy started
}

// warmupOf is how long a run of duration d warms up: the first 20% or
// one minute, whichever is shorter. Growth is judged after it.
func warmupOf(d time.Duration) time.Duration { return min(d/5, time.Minute) }

// refreshPeriod is how often kvproxy fetches a token that lives lifetime
// when told to refresh refreshBefore ahead of expiry: it refreshes at
// expiry − min(refreshBefore, lifetime/2) (auth.Cache, for a credential
// that gives no RefreshOn, as the managed identity one does not for
// tokens this short).
func refreshPeriod(lifetime, refreshBefore time.Duration) time.Duration {
	return lifetime - min(refreshBefore, lifetime/2)
}

// fetchSlack is how much shorter than refreshPeriod one period may be: a
// token's expires_on is whole seconds and kvproxy receives it a moment
// after it was minted.
const fetchSlack = 2 * time.Second

// expectedFetches is the range of token requests the identity endpoint
// should receive in span since kvproxy started: one at start-up and one per
// refresh period, 1 + span/period, give or take one (a refresh timer that
// fires a moment late, or periods up to fetchSlack short).
func expectedFetches(span, lifetime, refreshBefore time.Duration) (lo, hi int) {
	p := refreshPeriod(lifetime, refreshBefore)
	lo = max(1, int(span/p))
	hi = 2 + int(span/max(p-fetchSlack, time.Second))
	return lo, hi
}

// Growth limits after warm-up.
const (
	goroutineSlack = 10  // goroutines over the warm-up level
	rssSlackShare  = .25 // of the warm-up RSS …
	rssSlackMiB    = 8.0 // … or this, whichever is larger
)

// growth is the verdict on one quantity: its level at the end of warm-up
// against the highest it reached after.
type growth struct {
	judged     bool    // false when the run ended before a sample after warm-up
	base, peak float64 // at the first sample at or after warm-up; the highest after that
	limit      float64 // peak may not exceed it
	missing    int     // samples that could not be read
}

func (g growth) ok() bool { return !g.judged || (g.peak <= g.limit && g.missing == 0) }

// judgeGrowth judges kvproxy's goroutines and RSS over samples (in time
// order) against their level at the first sample at or after warm.
func judgeGrowth(samples []sample, warm time.Duration) (goroutines, rss growth) {
	i := slices.IndexFunc(samples, func(s sample) bool { return s.at >= warm })
	if i < 0 || i == len(samples)-1 {
		return growth{}, growth{}
	}
	b := samples[i]
	goroutines = growth{judged: true, base: float64(b.goroutines), peak: float64(b.goroutines)}
	rss = growth{judged: true, base: b.rssMiB, peak: b.rssMiB}
	for _, s := range samples[i+1:] {
		if s.goroutines < 0 {
			goroutines.missing++
		} else {
			goroutines.peak = max(goroutines.peak, float64(s.goroutines))
		}
		rss.peak = max(rss.peak, s.rssMiB)
	}
	if b.goroutines < 0 {
		goroutines.missing++
	}
	goroutines.limit = goroutines.base + goroutineSlack
	rss.limit = rss.base + max(rssSlackShare*rss.base, rssSlackMiB)
	return goroutines, rss
}

// percentiles returns the p50 and p99 of v (which it sorts), 0 for none.
func percentiles(v []float64) (p50, p99 float64) {
	if len(v) == 0 {
		return 0, 0
	}
	slices.Sort(v)
	return v[len(v)/2], v[min(len(v)-1, len(v)*99/100)]
}

// writeTable writes the samples as a Markdown table.
func writeTable(w io.Writer, samples []sample) {
	fmt.Fprintln(w, "| t | requests | req/s | errors | p50 ms | p99 ms | RSS MiB | goroutines | identity requests |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, s := range samples {
		g := "?"
		if s.goroutines >= 0 {
			g = fmt.Sprint(s.goroutines)
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %d | %.2f | %.2f | %.1f | %s | %d |\n",
			s.at.Round(time.Second), s.requests, s.rps, s.errors, s.p50, s.p99, s.rssMiB, g, s.fetches)
	}
}
