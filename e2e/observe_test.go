package e2e

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// TestNoTokenInLogs runs at debug level through successes, refusals and
// diagnosed 401s and 403s, then searches everything kvproxy said (stderr,
// answers, /metrics, /readyz) for every token the vault received.
func TestNoTokenInLogs(t *testing.T) {
	t.Parallel()
	// Two-minute tokens are never cached by azidentity, so the 401 below is
	// retried with a second token: two tokens to look for.
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{Lifetime: 2 * time.Minute})
	p := startKV(t, f, map[string]string{"KVPROXY_LOG_LEVEL": "debug"})
	p.waitReady(t, 20*time.Second)

	const putValue = "log-secret-value-7f3a9c"
	var said []string // everything kvproxy answered
	record := func(r response) response {
		said = append(said, string(r.Body))
		for k, vs := range r.Header {
			said = append(said, k+": "+strings.Join(vs, ", "))
		}
		return r
	}
	ok := record(p.get(t, "/secrets/db-password?api-version=7.5&maxresults=3"))
	if ok.Status != http.StatusOK {
		t.Fatalf("GET: %d %s", ok.Status, ok.Body)
	}
	h := md()
	h.Set("Content-Type", "application/json")
	h.Set("Authorization", "Bearer client-token-should-not-be-logged")
	if r := record(p.do(t, http.MethodPut, "/secrets/log-secret", h, strings.NewReader(`{"value":"`+putValue+`"}`))); r.Status != http.StatusOK {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	if r := record(p.get(t, "/secrets/"+azfake.SecretForbiddenRBAC)); r.Status != http.StatusForbidden {
		t.Fatalf("forbidden-rbac: %d", r.Status)
	}
	if r := record(p.get(t, "/secrets/"+azfake.SecretUnauthorizedExpired)); r.Status != http.StatusUnauthorized {
		t.Fatalf("unauthorized-expired: %d", r.Status)
	}
	record(p.get(t, "/secrets/no-such-secret"))
	record(p.do(t, http.MethodGet, "/secrets/db-password", nil, nil))
	rz, err := p.adminGet("/readyz")
	if err != nil {
		t.Fatal(err)
	}
	said = append(said, string(rz.Body))
	mr, err := p.adminGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	said = append(said, string(mr.Body))

	tokens := map[string]bool{}
	for _, r := range f.Vault.Requests() {
		if r.Token != "" {
			tokens[r.Token] = true
		}
	}
	if len(tokens) < 2 {
		t.Fatalf("the vault saw %d distinct tokens, want at least 2 (the 401 should have been retried with a new one)", len(tokens))
	}

	stderr := p.stderr.String()
	places := map[string]string{"stderr": stderr, "answers, /readyz and /metrics": strings.Join(said, "\n")}
	for where, text := range places {
		for tok := range tokens {
			sig := tok[strings.LastIndex(tok, ".")+1:]
			payload := strings.Split(tok, ".")[1]
			for what, s := range map[string]string{"a token": tok, "a token's signature": sig, "a token's payload": payload} {
				if strings.Contains(text, s) {
					t.Errorf("%s contains %s", where, what)
				}
			}
		}
		if strings.Contains(text, "eyJ") {
			i := strings.Index(text, "eyJ")
			t.Errorf("%s contains something shaped like a JWT: …%s…", where, text[max(0, i-80):min(len(text), i+40)])
		}
	}
	for _, secret := range []string{seededValue, putValue, "client-token-should-not-be-logged"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("stderr contains %q", secret)
		}
	}

	// The debug line per request: method, path without the query, status
	// and the vault's request id.
	var found bool
	for _, l := range p.logLines() {
		if l.Msg() != "request" || l.Str("level") != "DEBUG" {
			continue
		}
		if path := l.Str("path"); strings.ContainsAny(path, "?") || strings.Contains(path, "api-version") {
			t.Errorf("request line logs the query: %v", l)
		}
		if l.Str("method") == "GET" && l.Str("path") == "/secrets/db-password" && l["status"] == float64(200) {
			found = true
			if got, want := l.Str("vaultRequestId"), ok.Header.Get("x-ms-request-id"); got == "" || got != want {
				t.Errorf("vaultRequestId %q, want the vault's x-ms-request-id %q", got, want)
			}
			if _, ok := l["duration"]; !ok {
				t.Errorf("request line without duration: %v", l)
			}
		}
	}
	if !found {
		t.Errorf("no debug line {msg=request method=GET path=/secrets/db-password status=200}; stderr:\n%s", tail(stderr, 4096))
	}
}

// TestMetrics checks the exposition after known traffic.
func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	p := startKV(t, f, nil)
	p.waitReady(t, 20*time.Second)

	for range 3 {
		decodeSecret(t, p.get(t, "/secrets/db-password"))
	}
	h := md()
	h.Set("Content-Type", "application/json")
	decodeSecret(t, p.do(t, http.MethodPut, "/secrets/metrics-secret-q", h, strings.NewReader(`{"value":"m"}`)))
	checkRefusal(t, p.do(t, http.MethodGet, "/secrets/metrics-secret-q", nil, nil), http.StatusBadRequest, "metadata-header-missing")
	if r := p.get(t, "/secrets/"+azfake.SecretForbiddenRBAC); r.Status != http.StatusForbidden {
		t.Fatalf("forbidden-rbac: %d", r.Status)
	}
	if r := p.get(t, "/secrets/missing-secret-q"); r.Status != http.StatusNotFound {
		t.Fatalf("missing secret: %d", r.Status)
	}
	checkRefusal(t, rawRequest(t, p.Listen, "BREW /secrets/metrics-secret-q HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n"), http.StatusMethodNotAllowed, "method-not-allowed")
	const total, forwarded = 8, 6

	mfs := p.metricsOf(t)
	types := map[string]dto.MetricType{
		"kvproxy_requests_total":                 dto.MetricType_COUNTER,
		"kvproxy_request_duration_seconds":       dto.MetricType_HISTOGRAM,
		"kvproxy_upstream_duration_seconds":      dto.MetricType_HISTOGRAM,
		"kvproxy_token_acquisitions_total":       dto.MetricType_COUNTER,
		"kvproxy_token_expiry_timestamp_seconds": dto.MetricType_GAUGE,
		"kvproxy_token_refresh_duration_seconds": dto.MetricType_HISTOGRAM,
		"kvproxy_diagnoses_total":                dto.MetricType_COUNTER,
		"kvproxy_inflight_requests":              dto.MetricType_GAUGE,
		"kvproxy_ready":                          dto.MetricType_GAUGE,
		"kvproxy_build_info":                     dto.MetricType_GAUGE,
		"go_goroutines":                          dto.MetricType_GAUGE,
		"process_start_time_seconds":             dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		mf, ok := mfs[name]
		if !ok {
			t.Errorf("%s is not exported", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, mf.GetType(), typ)
		}
	}

	requests := []struct {
		method, code string
		n            float64
	}{
		{"GET", "200", 3}, {"PUT", "200", 1}, {"GET", "400", 1}, {"GET", "403", 1}, {"GET", "404", 1}, {"other", "405", 1},
	}
	var sum float64
	for _, r := range requests {
		if got := metric(mfs, "kvproxy_requests_total", map[string]string{"method": r.method, "code": r.code}); got != r.n {
			t.Errorf("kvproxy_requests_total{method=%q,code=%q} = %v, want %v", r.method, r.code, got, r.n)
		}
		sum += r.n
	}
	if mf := mfs["kvproxy_requests_total"]; mf != nil {
		var all float64
		for _, m := range mf.GetMetric() {
			all += m.GetCounter().GetValue()
			if len(m.GetLabel()) != 2 {
				t.Errorf("kvproxy_requests_total series with labels %v, want method and code", m.GetLabel())
			}
		}
		if all != sum {
			t.Errorf("kvproxy_requests_total sums to %v, want %v", all, sum)
		}
	}
	if got := metric(mfs, "kvproxy_request_duration_seconds", nil); got != total {
		t.Errorf("kvproxy_request_duration_seconds count %v, want %d", got, total)
	}
	if got := metric(mfs, "kvproxy_upstream_duration_seconds", nil); got != forwarded {
		t.Errorf("kvproxy_upstream_duration_seconds count %v, want %d (one per round trip to the vault)", got, forwarded)
	}
	if got := metric(mfs, "kvproxy_token_acquisitions_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("kvproxy_token_acquisitions_total{result=success} = %v, want 1", got)
	}
	if got := metric(mfs, "kvproxy_token_refresh_duration_seconds", nil); got < 1 {
		t.Errorf("kvproxy_token_refresh_duration_seconds count %v, want >= 1", got)
	}
	reqs := tokenRequests(f.Vault)
	if len(reqs) == 0 || reqs[0].Claims == nil {
		t.Fatal("the vault saw no valid token")
	}
	if got, want := metric(mfs, "kvproxy_token_expiry_timestamp_seconds", nil), float64(reqs[0].Claims.ExpiresAt.Unix()); got != want {
		t.Errorf("kvproxy_token_expiry_timestamp_seconds = %v, want the token's exp %v", got, want)
	}
	for diag, n := range map[string]float64{"metadata-header-missing": 1, "forbidden-by-rbac": 1, "method-not-allowed": 1} {
		if got := metric(mfs, "kvproxy_diagnoses_total", map[string]string{"diagnosis": diag}); got != n {
			t.Errorf("kvproxy_diagnoses_total{diagnosis=%q} = %v, want %v", diag, got, n)
		}
	}
	if got := metric(mfs, "kvproxy_inflight_requests", nil); got != 0 {
		t.Errorf("kvproxy_inflight_requests = %v when idle", got)
	}
	if got := metric(mfs, "kvproxy_ready", nil); got != 1 {
		t.Errorf("kvproxy_ready = %v", got)
	}
	if got := metric(mfs, "kvproxy_build_info", map[string]string{"goversion": runtime.Version()}); got != 1 {
		t.Errorf("kvproxy_build_info{goversion=%q} = %v, want 1", runtime.Version(), got)
	}
	if mf := mfs["kvproxy_build_info"]; mf != nil && len(mf.GetMetric()) == 1 {
		labels := map[string]string{}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for _, k := range []string{"version", "commit", "goversion"} {
			if labels[k] == "" {
				t.Errorf("kvproxy_build_info has no %s label: %v", k, labels)
			}
		}
	}
	if got := metric(mfs, "go_goroutines", nil); got < 1 {
		t.Errorf("go_goroutines = %v", got)
	}
	if got := metric(mfs, "process_start_time_seconds", nil); time.Since(time.Unix(int64(got), 0)) > 5*time.Minute || got == 0 {
		t.Errorf("process_start_time_seconds = %v, not this process's start", got)
	}

	// Bounded labels: no path, secret name or method a client made up.
	forbidden := []string{"/", "secrets", "db-password", "metrics-secret-q", "missing-secret-q", "forbidden-rbac", "BREW"}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				for _, bad := range forbidden {
					if strings.Contains(lp.GetValue(), bad) {
						t.Errorf("%s{%s=%q}: a label value holds %q", name, lp.GetName(), lp.GetValue(), bad)
					}
				}
			}
		}
	}
}
