package harness

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

func TestMetricSum(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
kvproxy_token_acquisitions_total{result="success"} 3
kvproxy_token_acquisitions_total{result="unchanged"} 2
`)) //nolint:errcheck
	}))
	defer srv.Close()
	tests := []struct {
		name, metric string
		want         float64
	}{
		{name: "unlabelled, not its longer namesake", metric: "go_goroutines", want: 42},
		{name: "summed over label sets", metric: "kvproxy_token_acquisitions_total", want: 5},
		{name: "absent", metric: "kvproxy_nothing", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MetricSum(srv.URL, tt.metric)
			if err != nil || got != tt.want {
				t.Errorf("MetricSum(%q) = %v, %v; want %v", tt.metric, got, err, tt.want)
			}
		})
	}
	if _, err := MetricSum(srv.URL+"/nowhere", "go_goroutines"); err == nil {
		t.Error("MetricSum of a 404 succeeded")
	}
}

func TestStatusMiB(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	if rss := StatusMiB([]int{os.Getpid()}, "VmRSS"); rss <= 0 {
		t.Errorf("StatusMiB(self, VmRSS) = %v, want > 0", rss)
	}
	if rss := StatusMiB([]int{-1}, "VmRSS"); rss != 0 {
		t.Errorf("StatusMiB(no such process) = %v, want 0", rss)
	}
}
