package metrics

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCacheExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewCacheMetrics(reg)
	m.ObserveResult(CacheHit)
	m.ObserveResult(CacheHit)
	m.ObserveResult(CacheCoalesced)
	m.ObserveResult("secrets/db-password") // unbounded values are dropped
	m.ObserveEviction()
	m.ObserveSize(3, 1234)

	f, err := os.Open("testdata/cache_exposition.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, CacheNames()...); err != nil {
		t.Fatal(err)
	}
}

func TestCacheNamesAreWhatIsExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewCacheMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, mf := range mfs {
		have = append(have, mf.GetName())
	}
	want := slices.Clone(CacheNames())
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Errorf("exported %v; CacheNames %v", have, want)
	}
	for _, n := range CacheNames() {
		if slices.Contains(Names(), n) || !strings.HasPrefix(n, "kvproxy_cache_") {
			t.Errorf("%s: twice, or not a cache metric", n)
		}
	}
}

func TestCacheMetricsNilSafeAndAllocationFree(t *testing.T) {
	var nilm *CacheMetrics
	nilm.ObserveResult(CacheHit)
	nilm.ObserveEviction()
	nilm.ObserveSize(1, 1)
	m := NewCacheMetrics(prometheus.NewRegistry())
	if a := testing.AllocsPerRun(100, func() { m.ObserveResult(CacheHit) }); a > 0 {
		t.Errorf("%v allocs per result", a)
	}
}
