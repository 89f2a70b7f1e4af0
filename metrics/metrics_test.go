package metrics

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
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

// exported gathers a registry holding every kvproxy metric with at least one
// series each.
func exported(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
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
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "kvproxy_") {
			out[mf.GetName()] = mf
		}
	}
	return out
}

// Names and Descriptions are what the manifests' and dashboards' tests
// check against, so they must be exactly what a registry exports under
// kvproxy_: the same names, types and label names.
func TestDescriptionsAreWhatIsExported(t *testing.T) {
	mfs := exported(t)
	if got, want := slices.Sorted(maps.Keys(mfs)), slices.Sorted(slices.Values(Names())); !slices.Equal(got, want) {
		t.Errorf("exported %v\nNames() %v", got, want)
	}
	for _, d := range Descriptions() {
		mf, ok := mfs[d.Name]
		if !ok {
			continue // reported above
		}
		if kind := strings.ToLower(mf.GetType().String()); kind != d.Kind {
			t.Errorf("%s is exported as a %s, described as a %s", d.Name, kind, d.Kind)
		}
		if !slices.IsSorted(d.Labels) {
			t.Errorf("%s: labels %v are not sorted", d.Name, d.Labels)
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, lp := range s.GetLabel() {
				labels = append(labels, lp.GetName())
			}
			slices.Sort(labels)
			if !slices.Equal(labels, d.Labels) {
				t.Errorf("%s has a series with labels %v, described as %v", d.Name, labels, d.Labels)
			}
		}
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
