package secretcache

import (
	"slices"
	"testing"

	"github.com/kvproxy/kvproxy/metrics"
)

// The package does not import metrics; its tests pin that the two agree.
var _ Observer = (*metrics.CacheMetrics)(nil)

func TestOutcomesAreTheMetricsResults(t *testing.T) {
	var names []string
	for o := Hit; o <= Bypass; o++ {
		names = append(names, o.String())
	}
	want := slices.Clone(metrics.CacheResults)
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("outcomes %v; metrics.CacheResults %v", names, want)
	}
}
