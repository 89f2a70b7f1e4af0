// Package metrics defines every Prometheus collector kvproxy exports. All of
// them are built from an injected prometheus.Registerer, so tests use a fresh
// registry and production registers once at start-up.
//
// Labels are bounded: HTTP method (normalised), status code, token result,
// diagnosis code and retry reason. Never a path, a secret name or a token.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Token acquisition results, the values of kvproxy_token_acquisitions_total{result}.
const (
	ResultSuccess = "success"
	// ResultUnchanged: the credential answered with the token already held
	// (azidentity serves its cached token until 5 minutes before expiry).
	ResultUnchanged = "unchanged"
	ResultError     = "error"
)

// TokenResults lists the token acquisition results.
var TokenResults = []string{ResultSuccess, ResultUnchanged, ResultError}

// Metrics holds kvproxy's collectors.
type Metrics struct {
	Requests          *prometheus.CounterVec
	RequestDuration   prometheus.Histogram
	UpstreamDuration  prometheus.Histogram
	TokenAcquisitions *prometheus.CounterVec
	TokenExpiry       prometheus.Gauge
	TokenRefresh      prometheus.Histogram
	Diagnoses         *prometheus.CounterVec
	Inflight          prometheus.Gauge
	UpstreamRetries   *prometheus.CounterVec
	ClientRequests    *prometheus.CounterVec
	Overload          *prometheus.CounterVec
	Connections       prometheus.Gauge
	BufferedBytes     prometheus.Gauge
	BuildInfo         *prometheus.GaugeVec
}

// Names lists the name of every metric kvproxy defines (the Go and process
// collectors' aside), in the order of the README's metrics table. Tests of
// the manifests, alerts and dashboards check their queries against it.
func Names() []string {
	ds := Descriptions()
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Name
	}
	return out
}

// Description is what a scrape shows of one metric kvproxy defines.
type Description struct {
	Name string
	// Kind is the exposition type: "counter", "gauge" or "histogram".
	Kind string
	// Labels are the label names, sorted; none for a metric without labels.
	// A histogram's "le" is not listed.
	Labels []string
}

// Descriptions describes every metric kvproxy defines (the Go and process
// collectors' aside), in the order of [Names]. A test compares it with what
// a registry exports, so tools outside this module (the manifest tests of
// deploy/k8stest) can rely on it instead of reading this package's source.
func Descriptions() []Description {
	return []Description{
		{"kvproxy_requests_total", "counter", []string{"code", "method"}},
		{"kvproxy_request_duration_seconds", "histogram", nil},
		{"kvproxy_upstream_duration_seconds", "histogram", nil},
		{"kvproxy_token_acquisitions_total", "counter", []string{"result"}},
		{"kvproxy_token_expiry_timestamp_seconds", "gauge", nil},
		{"kvproxy_token_refresh_duration_seconds", "histogram", nil},
		{"kvproxy_diagnoses_total", "counter", []string{"diagnosis"}},
		{"kvproxy_inflight_requests", "gauge", nil},
		{"kvproxy_upstream_retries_total", "counter", []string{"reason"}},
		{"kvproxy_build_info", "gauge", []string{"commit", "goversion", "version"}},
		{"kvproxy_ready", "gauge", nil},
		{"kvproxy_client_requests_total", "counter", []string{"result"}},
		{"kvproxy_overload_refusals_total", "counter", []string{"limit"}},
		{"kvproxy_connections", "gauge", nil},
		{"kvproxy_buffered_bytes", "gauge", nil},
	}
}

// latencyBuckets cover a localhost hop (sub-millisecond) through a slow vault.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New creates the collectors and registers them, with the Go and process
// collectors, on reg. It panics if a collector is already registered there,
// which is a programming error.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_requests_total",
			Help: "Requests answered by the proxy listener, by method and status code (including refusals by kvproxy itself).",
		}, []string{"method", "code"}),
		RequestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvproxy_request_duration_seconds",
			Help:    "Time from receiving a request to finishing its response, token wait and retries included.",
			Buckets: latencyBuckets,
		}),
		UpstreamDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvproxy_upstream_duration_seconds",
			Help:    "Time of each round trip to the vault, until its response headers arrive.",
			Buckets: latencyBuckets,
		}),
		TokenAcquisitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_token_acquisitions_total",
			Help: "Token fetches from the credential, by result (success, unchanged, error).",
		}, []string{"result"}),
		TokenExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_token_expiry_timestamp_seconds",
			Help: "Expiry of the token currently held, as a Unix timestamp; 0 when none is held.",
		}),
		TokenRefresh: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvproxy_token_refresh_duration_seconds",
			Help:    "Duration of token fetches from the credential, failures included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		Diagnoses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_diagnoses_total",
			Help: "Diagnoses attached to responses, by code (see the README's diagnostics table).",
		}, []string{"diagnosis"}),
		Inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_inflight_requests",
			Help: "Requests being served by the proxy listener.",
		}),
		UpstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_upstream_retries_total",
			Help: "Requests to the vault sent again, by reason (unauthorized, throttled, unavailable).",
		}, []string{"reason"}),
		ClientRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_client_requests_total",
			Help: "Requests judged by client authentication (KVPROXY_CLIENT_AUTH=kubernetes), by result (allowed, unauthenticated, denied).",
		}, []string{"result"}),
		Overload: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_overload_refusals_total",
			Help: "Work refused with 503 overloaded, by the limit that was reached: connections (KVPROXY_MAX_CONNS) or buffered_bytes (KVPROXY_MAX_BUFFERED_BYTES).",
		}, []string{"limit"}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_connections",
			Help: "Client connections open on the proxy listener.",
		}),
		BufferedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_buffered_bytes",
			Help: "Bytes of request bodies held in memory (reserved against KVPROXY_MAX_BUFFERED_BYTES).",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kvproxy_build_info",
			Help: "Always 1; labels carry the build's version, commit and Go version.",
		}, []string{"version", "commit", "goversion"}),
	}
	reg.MustRegister(
		m.Requests, m.RequestDuration, m.UpstreamDuration, m.TokenAcquisitions,
		m.TokenExpiry, m.TokenRefresh, m.Diagnoses, m.Inflight, m.UpstreamRetries,
		m.ClientRequests, m.Overload, m.Connections, m.BufferedBytes, m.BuildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// InitSeries creates the series of every known label value at zero:
// token results, retry reasons and the given diagnosis codes. Prometheus'
// increase() cannot see a series' first count, so without this an alert on
// the first token error or the first 403 would never fire.
func (m *Metrics) InitSeries(diagnoses []string) {
	for _, r := range TokenResults {
		m.TokenAcquisitions.WithLabelValues(r)
	}
	for _, r := range RetryReasons {
		m.UpstreamRetries.WithLabelValues(r)
	}
	for _, d := range diagnoses {
		m.Diagnoses.WithLabelValues(d)
	}
	for _, r := range ClientResults {
		m.ClientRequests.WithLabelValues(r)
	}
	for _, l := range OverloadLimits {
		m.Overload.WithLabelValues(l)
	}
}

// Overload limits, the values of kvproxy_overload_refusals_total{limit}.
const (
	LimitConnections   = "connections"
	LimitBufferedBytes = "buffered_bytes"
)

// OverloadLimits lists the overload limits.
var OverloadLimits = []string{LimitConnections, LimitBufferedBytes}

// CountOverload counts work refused because limit was reached.
func (m *Metrics) CountOverload(limit string) {
	if m != nil {
		m.Overload.WithLabelValues(limit).Inc()
	}
}

// AddConnections moves kvproxy_connections by delta.
func (m *Metrics) AddConnections(delta float64) {
	if m != nil {
		m.Connections.Add(delta)
	}
}

// AddBufferedBytes moves kvproxy_buffered_bytes by delta.
func (m *Metrics) AddBufferedBytes(delta int64) {
	if m != nil {
		m.BufferedBytes.Add(float64(delta))
	}
}

// Client results, the values of kvproxy_client_requests_total{result}.
const (
	ClientAllowed         = "allowed"
	ClientUnauthenticated = "unauthenticated"
	ClientDenied          = "denied"
)

// ClientResults lists the client results.
var ClientResults = []string{ClientAllowed, ClientUnauthenticated, ClientDenied}

// CountClient counts a request judged by client authentication.
func (m *Metrics) CountClient(result string) {
	if m != nil {
		m.ClientRequests.WithLabelValues(result).Inc()
	}
}

// Retry reasons, the values of kvproxy_upstream_retries_total{reason}.
const (
	RetryUnauthorized = "unauthorized" // a 401, retried with a renewed token
	RetryThrottled    = "throttled"    // a 429
	RetryUnavailable  = "unavailable"  // a 503
)

// RetryReasons lists the retry reasons.
var RetryReasons = []string{RetryUnauthorized, RetryThrottled, RetryUnavailable}

// RegisterReady registers kvproxy_ready, which reports ready() at each
// scrape: 1 while kvproxy holds a valid token and is not draining (what
// /readyz answers), else 0.
func RegisterReady(reg prometheus.Registerer, ready func() bool) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kvproxy_ready",
		Help: "1 while kvproxy holds a valid token and is not draining (what /readyz answers), else 0.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

// SetBuildInfo sets kvproxy_build_info.
func (m *Metrics) SetBuildInfo(version, commit, goVersion string) {
	m.BuildInfo.WithLabelValues(version, commit, goVersion).Set(1)
}

// methodLabels bounds the method label: anything unknown becomes "other".
var methodLabels = map[string]string{
	http.MethodGet: "GET", http.MethodHead: "HEAD", http.MethodPost: "POST",
	http.MethodPut: "PUT", http.MethodPatch: "PATCH", http.MethodDelete: "DELETE",
	http.MethodOptions: "OPTIONS",
}

// codeLabels pre-computes status labels so the hot path does not allocate.
var codeLabels = func() [600]string {
	var a [600]string
	for i := 100; i < 600; i++ {
		a[i] = strconv.Itoa(i)
	}
	return a
}()

// ObserveRequest counts one answered request. Like every method of
// Metrics, it does nothing on a nil *Metrics.
func (m *Metrics) ObserveRequest(method string, code int, seconds float64) {
	if m == nil {
		return
	}
	ml, ok := methodLabels[method]
	if !ok {
		ml = "other"
	}
	cl := "other"
	if code >= 100 && code < 600 {
		cl = codeLabels[code]
	}
	m.Requests.WithLabelValues(ml, cl).Inc()
	m.RequestDuration.Observe(seconds)
}

// RequestStarted and RequestDone track kvproxy_inflight_requests.
func (m *Metrics) RequestStarted() {
	if m != nil {
		m.Inflight.Inc()
	}
}

// RequestDone ends what RequestStarted began.
func (m *Metrics) RequestDone() {
	if m != nil {
		m.Inflight.Dec()
	}
}

// ObserveUpstream records one round trip to the vault.
func (m *Metrics) ObserveUpstream(seconds float64) {
	if m != nil {
		m.UpstreamDuration.Observe(seconds)
	}
}

// CountRetry counts a request sent to the vault again, by reason.
func (m *Metrics) CountRetry(reason string) {
	if m != nil {
		m.UpstreamRetries.WithLabelValues(reason).Inc()
	}
}

// CountDiagnosis counts a diagnosis attached to a response.
func (m *Metrics) CountDiagnosis(code string) {
	if m != nil {
		m.Diagnoses.WithLabelValues(code).Inc()
	}
}

// ObserveTokenFetch records one fetch from the credential and its result.
// A failed fetch has no result here: see CountTokenResult.
func (m *Metrics) ObserveTokenFetch(seconds float64) {
	if m != nil {
		m.TokenRefresh.Observe(seconds)
	}
}

// CountTokenResult counts a token acquisition by result.
func (m *Metrics) CountTokenResult(result string) {
	if m != nil {
		m.TokenAcquisitions.WithLabelValues(result).Inc()
	}
}

// SetTokenExpiry sets kvproxy_token_expiry_timestamp_seconds (0: none held).
func (m *Metrics) SetTokenExpiry(unix int64) {
	if m != nil {
		m.TokenExpiry.Set(float64(unix))
	}
}
