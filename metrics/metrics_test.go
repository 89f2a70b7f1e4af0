package metrics

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	RegisterReady(reg, func() bool { return true })
	m.SetBuildInfo("v1.2.3", "abc123", "go1.26.8")
	m.ObserveRequest("GET", 200, 0.003)
	m.ObserveRequest("PROPFIND", 405, 0.0001)
	m.ObserveRequest("GET", 999, 0.0001)
	m.TokenAcquisitions.WithLabelValues(ResultSuccess).Inc()
	m.Diagnoses.WithLabelValues("forbidden-by-rbac").Inc()
	m.UpstreamRetries.WithLabelValues("throttled").Add(2)
	m.TokenExpiry.Set(1795409711)
	m.InitSeries([]string{"forbidden-by-rbac", "tenant-mismatch"})

	f, err := os.Open("testdata/exposition.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f,
		"kvproxy_requests_total", "kvproxy_token_acquisitions_total", "kvproxy_diagnoses_total",
		"kvproxy_upstream_retries_total", "kvproxy_token_expiry_timestamp_seconds", "kvproxy_ready",
		"kvproxy_build_info", "kvproxy_inflight_requests"); err != nil {
		t.Fatal(err)
	}
	// The Go and process collectors are there too.
	names, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, mf := range names {
		have = append(have, mf.GetName())
	}
	for _, want := range []string{"go_goroutines", "process_start_time_seconds", "kvproxy_request_duration_seconds",
		"kvproxy_upstream_duration_seconds", "kvproxy_token_refresh_duration_seconds"} {
		if !strings.Contains(strings.Join(have, " "), want) {
			t.Errorf("%s not exported", want)
		}
	}
}

func TestObserveRequestDoesNotAllocate(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.ObserveRequest("GET", 200, 0.001)
	if a := testing.AllocsPerRun(100, func() { m.ObserveRequest("GET", 200, 0.001) }); a > 0 {
		t.Errorf("%v allocs per request", a)
	}
}

// Names is the list the manifests' and dashboards' tests check against, so
// it must be exactly what a registry exports under kvproxy_.
func TestNamesAreWhatIsExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	RegisterReady(reg, func() bool { return false })
	m.InitSeries([]string{"x"})
	m.ObserveRequest("GET", 200, 0)
	m.SetBuildInfo("v", "c", "go")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "kvproxy_") {
			have = append(have, mf.GetName())
		}
	}
	want := append([]string(nil), Names()...)
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("exported %v\nNames() %v", have, want)
	}
}

func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics
	m.ObserveRequest("GET", 200, 0)
	m.RequestStarted()
	m.RequestDone()
	m.ObserveUpstream(0)
	m.CountRetry(RetryThrottled)
	m.CountDiagnosis("x")
	m.ObserveTokenFetch(0)
	m.CountTokenResult(ResultSuccess)
	m.SetTokenExpiry(0)
}
