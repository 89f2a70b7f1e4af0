package main

import (
	"strings"
	"testing"
	"time"
)

func TestWarmupOf(t *testing.T) {
	tests := []struct {
		name     string
		duration time.Duration
		want     time.Duration
	}{
		{name: "short run: a fifth", duration: 2 * time.Minute, want: 24 * time.Second},
		{name: "long run: a minute", duration: 10 * time.Minute, want: time.Minute},
		{name: "five minutes: both the same", duration: 5 * time.Minute, want: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := warmupOf(tt.duration); got != tt.want {
				t.Errorf("warmupOf(%v) = %v, want %v", tt.duration, got, tt.want)
			}
		})
	}
}

func TestExpectedFetches(t *testing.T) {
	tests := []struct {
		name                          string
		span, lifetime, refreshBefore time.Duration
		lo, hi                        int
	}{
		// The default soak: 2-minute tokens refreshed at half life, so
		// 1 + 10 = 11 fetches in ten minutes and a few seconds of start-up.
		{name: "default ten minutes", span: 10*time.Minute + 3*time.Second, lifetime: 2 * time.Minute, refreshBefore: time.Minute, lo: 10, hi: 12},
		// kvproxy caps the refresh window at half the lifetime.
		{name: "refresh window capped at half life", span: 10*time.Minute + 3*time.Second, lifetime: 2 * time.Minute, refreshBefore: 5 * time.Minute, lo: 10, hi: 12},
		{name: "three-minute tokens, refreshed a minute early", span: 10 * time.Minute, lifetime: 3 * time.Minute, refreshBefore: time.Minute, lo: 5, hi: 7},
		{name: "shorter than one period: the start-up fetch, maybe one more", span: 30 * time.Second, lifetime: 2 * time.Minute, refreshBefore: time.Minute, lo: 1, hi: 2},
		// Periods a little short (whole-second expires_on) add one at most.
		{name: "just under a whole number of periods", span: 4*time.Minute - time.Second, lifetime: 2 * time.Minute, refreshBefore: time.Minute, lo: 3, hi: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi := expectedFetches(tt.span, tt.lifetime, tt.refreshBefore)
			if lo != tt.lo || hi != tt.hi {
				t.Errorf("expectedFetches(%v, %v, %v) = %d..%d, want %d..%d", tt.span, tt.lifetime, tt.refreshBefore, lo, hi, tt.lo, tt.hi)
			}
			nominal := 1 + int(tt.span/refreshPeriod(tt.lifetime, tt.refreshBefore))
			if nominal < lo || nominal > hi {
				t.Errorf("the nominal count %d is outside %d..%d", nominal, lo, hi)
			}
		})
	}
}

// samplesOf makes one sample every 10 seconds from t=0 with the given
// goroutines and RSS.
func samplesOf(goroutines []int, rss []float64) []sample {
	out := make([]sample, len(goroutines))
	for i := range goroutines {
		out[i] = sample{at: time.Duration(i) * 10 * time.Second, goroutines: goroutines[i], rssMiB: rss[i]}
	}
	return out
}

func TestJudgeGrowth(t *testing.T) {
	const warm = 20 * time.Second // the third sample is the warm-up level
	tests := []struct {
		name             string
		goroutines       []int
		rss              []float64
		judged           bool
		goroutinesOK     bool
		rssOK            bool
		wantBase, wantPk float64 // goroutines
	}{
		{name: "flat after a warm-up climb", goroutines: []int{10, 40, 52, 52, 53, 52}, rss: []float64{10, 20, 23, 23.5, 23.4, 23.5},
			judged: true, goroutinesOK: true, rssOK: true, wantBase: 52, wantPk: 53},
		{name: "goroutines exactly at the limit", goroutines: []int{52, 52, 52, 60, 62}, rss: []float64{20, 20, 20, 20, 20},
			judged: true, goroutinesOK: true, rssOK: true, wantBase: 52, wantPk: 62},
		{name: "a goroutine leak", goroutines: []int{52, 52, 52, 58, 63}, rss: []float64{20, 20, 20, 20, 20},
			judged: true, goroutinesOK: false, rssOK: true, wantBase: 52, wantPk: 63},
		// 25% of 20 MiB is 5 MiB, less than 8 MiB: the limit is 28 MiB.
		{name: "small RSS: 8 MiB allowed", goroutines: []int{52, 52, 52, 52}, rss: []float64{20, 20, 20, 27.9},
			judged: true, goroutinesOK: true, rssOK: true, wantBase: 52, wantPk: 52},
		{name: "small RSS past 8 MiB", goroutines: []int{52, 52, 52, 52}, rss: []float64{20, 20, 20, 28.1},
			judged: true, goroutinesOK: true, rssOK: false, wantBase: 52, wantPk: 52},
		// 25% of 64 MiB is 16 MiB.
		{name: "large RSS: 25% allowed", goroutines: []int{52, 52, 52, 52}, rss: []float64{64, 64, 64, 79},
			judged: true, goroutinesOK: true, rssOK: true, wantBase: 52, wantPk: 52},
		{name: "growth during warm-up does not count", goroutines: []int{5, 500, 52, 52}, rss: []float64{5, 90, 20, 20},
			judged: true, goroutinesOK: true, rssOK: true, wantBase: 52, wantPk: 52},
		{name: "a sample without /metrics fails the check", goroutines: []int{52, 52, 52, -1, 52}, rss: []float64{20, 20, 20, 20, 20},
			judged: true, goroutinesOK: false, rssOK: true, wantBase: 52, wantPk: 52},
		{name: "ended at warm-up: not judged", goroutines: []int{10, 40, 52}, rss: []float64{10, 20, 23},
			judged: false, goroutinesOK: true, rssOK: true},
		{name: "ended before warm-up: not judged", goroutines: []int{10, 40}, rss: []float64{10, 20},
			judged: false, goroutinesOK: true, rssOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, r := judgeGrowth(samplesOf(tt.goroutines, tt.rss), warm)
			if g.judged != tt.judged || r.judged != tt.judged {
				t.Fatalf("judged goroutines %v, RSS %v; want %v", g.judged, r.judged, tt.judged)
			}
			if g.ok() != tt.goroutinesOK || r.ok() != tt.rssOK {
				t.Errorf("goroutines ok %v (%+v), RSS ok %v (%+v); want %v, %v", g.ok(), g, r.ok(), r, tt.goroutinesOK, tt.rssOK)
			}
			if tt.judged && (g.base != tt.wantBase || g.peak != tt.wantPk) {
				t.Errorf("goroutines %v at warm-up, peak %v; want %v, %v", g.base, g.peak, tt.wantBase, tt.wantPk)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	writeTable(&b, []sample{
		{at: 10*time.Second + 4*time.Millisecond, requests: 2000, rps: 200, p50: 0.5, p99: 2.25, rssMiB: 22.94, goroutines: 52, fetches: 1},
		{at: 20 * time.Second, requests: 4000, errors: 1, rps: 200, rssMiB: 23, goroutines: -1, fetches: 2},
	})
	want := "| t | requests | req/s | errors | p50 ms | p99 ms | RSS MiB | goroutines | identity requests |\n" +
		"|---|---|---|---|---|---|---|---|---|\n" +
		"| 10s | 2000 | 200 | 0 | 0.50 | 2.25 | 22.9 | 52 | 1 |\n" +
		"| 20s | 4000 | 200 | 1 | 0.00 | 0.00 | 23.0 | ? | 2 |\n"
	if got := b.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}
