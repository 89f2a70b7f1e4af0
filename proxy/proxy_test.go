package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// staticTokens hands out one token, or an error; asked to renew, it hands
// out next, or fails when next is empty or the rejected token.
type staticTokens struct {
	mu      sync.Mutex
	tok     string
	err     error
	calls   atomic.Int32
	next    string
	renewed atomic.Int32
}

func (s *staticTokens) Token(context.Context) (azcore.AccessToken, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return azcore.AccessToken{}, s.err
	}
	return azcore.AccessToken{Token: s.tok, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func (r *staticTokens) Renew(_ context.Context, rejected string, _ kvwire.Challenge) (azcore.AccessToken, error) {
	r.renewed.Add(1)
	if r.next == "" || r.next == rejected {
		return azcore.AccessToken{}, errors.New("no other token")
	}
	return azcore.AccessToken{Token: r.next, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func goodToken() string {
	return azfake.MintToken(azfake.TokenClaims{TenantID: azfake.DefaultTenantID, ObjectID: azfake.DefaultObjectID,
		AppID: azfake.DefaultAppID, Audience: "https://vault.azure.net", ExpiresAt: time.Now().Add(time.Hour)})
}

type env struct {
	vault   *azfake.Vault
	faults  *azfake.VaultFaults
	vaultU  *url.URL
	proxy   *Proxy
	url     string // the proxy's base URL
	tokens  *staticTokens
	metrics *metrics.Metrics
}

func setup(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	certs, err := azfake.NewTLS()
	if err != nil {
		t.Fatal(err)
	}
	faults := new(azfake.VaultFaults)
	v := azfake.NewVault(azfake.VaultOptions{Faults: faults})
	vu, err := v.Start(certs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	u, _ := url.Parse(vu)
	e := &env{vault: v, faults: faults, vaultU: u, tokens: &staticTokens{tok: goodToken()}, metrics: metrics.New(prometheus.NewRegistry())}
	o := Options{
		Vault: u, Tokens: e.tokens, RootCAs: certs.CertPool,
		APIVersion: "7.5", RequireMetadata: true, MaxBodyBytes: 1024, UpstreamTimeout: 5 * time.Second,
		RetryMax: 2, RetryMaxWait: time.Second, Metrics: e.metrics, Scope: "https://vault.azure.net/.default",
	}
	if mod != nil {
		mod(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy, e.url = p, serveProxy(t, p, ServerOptions{CheckHost: true})
	return e
}

// serveProxy serves p on a loopback port until the test ends and returns
// its base URL.
func serveProxy(t *testing.T, p *Proxy, so ServerOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := p.Server(so)
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()   //nolint:errcheck // ends with the test
	t.Cleanup(func() { srv.Shutdown(); <-done }) //nolint:errcheck
	return "http://" + ln.Addr().String()
}

func (e *env) do(t *testing.T, method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata", "true")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestForwardsWithInjectedToken(t *testing.T) {
	e := setup(t, nil)
	resp, body := e.do(t, "GET", "/secrets/db-password", nil, "Authorization", "Bearer client-supplied", "X-Custom", "dropped",
		"x-ms-client-request-id", "req-1", "User-Agent", "azsdk-go/1", "Accept", "application/json", "traceparent", "00-abc-def-01", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAAP__", "X-HTTP-Method-Override", "DELETE",
		"X-Original-URL", "/keys/k", "Via", "1.1 evil", "Proxy-Authorization", "Basic eA==", "Forwarded", "host=evil.example")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var sb struct{ Value string }
	json.Unmarshal(body, &sb)
	if sb.Value != "correct-horse-battery-staple" {
		t.Fatalf("value %q", sb.Value)
	}
	reqs := e.vault.Requests()
	if len(reqs) != 1 {
		t.Fatalf("vault saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Token != e.tokens.tok {
		t.Error("the vault did not receive kvproxy's token (the client's Authorization must be replaced)")
	}
	if r.Header.Get("Metadata") != "" {
		t.Error("Metadata header forwarded to the vault")
	}
	// Only what Key Vault uses reaches it.
	for _, h := range []string{"X-Custom", "Upgrade", "HTTP2-Settings", "X-HTTP-Method-Override", "X-Original-URL", "Via", "Proxy-Authorization", "Forwarded"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("%s: %q reached the vault", h, v)
		}
	}
	for h, want := range map[string]string{"x-ms-client-request-id": "req-1", "User-Agent": "azsdk-go/1", "Accept": "application/json", "traceparent": "00-abc-def-01"} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("%s = %q at the vault, want %q", h, got, want)
		}
	}
	if r.RawQuery != "api-version=7.5" {
		t.Errorf("query %q, want api-version=7.5 added", r.RawQuery)
	}
}

func TestPreservesPathAndQuery(t *testing.T) {
	e := setup(t, nil)
	e.do(t, "GET", "/secrets?maxresults=2&api-version=2025-07-01", nil)
	r := e.vault.Requests()[0]
	if r.Path != "/secrets" || r.RawQuery != "maxresults=2&api-version=2025-07-01" {
		t.Fatalf("forwarded %s?%s", r.Path, r.RawQuery)
	}
}

func TestPutWithBody(t *testing.T) {
	e := setup(t, nil)
	resp, body := e.do(t, "PUT", "/secrets/new-one", strings.NewReader(`{"value":"v1"}`), "Content-Type", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if r := e.vault.Requests(); len(r) != 1 || r[0].Header.Get("Content-Type") != "application/json" || string(r[0].Body) != `{"value":"v1"}` {
		t.Fatalf("the vault got %+v", r)
	}
	resp, body = e.do(t, "GET", "/secrets/new-one", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"v1"`) {
		t.Fatalf("GET after PUT: %d %s", resp.StatusCode, body)
	}
}

type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestRefusalsNeverReachTheVault(t *testing.T) {
	big := strings.Repeat("x", 2048)
	tests := []struct {
		name      string
		readOnly  bool
		method    string
		path      string
		body      io.Reader
		hdr       []string
		status    int
		diagnosis string
	}{
		{name: "no Metadata header", method: "GET", path: "/secrets/db-password", hdr: []string{"Metadata", ""}, status: 400, diagnosis: diagnose.MetadataHeaderMissing},
		{name: "Metadata false", method: "GET", path: "/secrets/db-password", hdr: []string{"Metadata", "false"}, status: 400, diagnosis: diagnose.MetadataHeaderMissing},
		{name: "read-only PUT", readOnly: true, method: "PUT", path: "/secrets/x", body: strings.NewReader(`{"value":"v"}`), status: 405, diagnosis: diagnose.ReadOnly},
		{name: "read-only DELETE", readOnly: true, method: "DELETE", path: "/secrets/db-password", status: 405, diagnosis: diagnose.ReadOnly},
		{name: "read-only POST", readOnly: true, method: "POST", path: "/keys/k/sign", status: 405, diagnosis: diagnose.ReadOnly},
		{name: "body over limit by length", method: "PUT", path: "/secrets/x", body: strings.NewReader(big), status: 413, diagnosis: diagnose.BodyTooLarge},
		{name: "chunked body over limit", method: "PUT", path: "/secrets/x", body: chunked{strings.NewReader(big)}, status: 413, diagnosis: diagnose.BodyTooLarge},
		{name: "TRACE", method: "TRACE", path: "/secrets/x", status: 405, diagnosis: diagnose.MethodNotAllowed},
		{name: "OPTIONS", method: "OPTIONS", path: "/secrets/x", status: 405, diagnosis: diagnose.MethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, func(o *Options) { o.ReadOnly = tt.readOnly })
			resp, body := e.do(t, tt.method, tt.path, tt.body, tt.hdr...)
			assertRefusal(t, resp, body, tt.status, tt.diagnosis)
			if n := len(e.vault.Requests()); n != 0 {
				t.Fatalf("vault received %d requests", n)
			}
			if n := e.tokens.calls.Load(); n != 0 {
				t.Fatalf("a token was requested %d times for a refused request", n)
			}
			if got := testutil.ToFloat64(e.metrics.Diagnoses.WithLabelValues(tt.diagnosis)); got != 1 {
				t.Errorf("kvproxy_diagnoses_total{diagnosis=%q} = %v", tt.diagnosis, got)
			}
		})
	}
}

func assertRefusal(t *testing.T, resp *http.Response, body []byte, status int, diagnosis string) {
	t.Helper()
	if !slices.Contains(diagnose.Codes(), diagnosis) {
		t.Errorf("%q is missing from diagnose.Codes()", diagnosis)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get(HeaderDiagnosis); got != diagnosis {
		t.Errorf("%s = %q, want %q", HeaderDiagnosis, got, diagnosis)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if eb.Error.Code == "" || eb.Error.Message == "" || eb.Kvproxy.Diagnosis != diagnosis || eb.Kvproxy.Detail == "" {
		t.Errorf("incomplete error body: %s", body)
	}
}

// rawRequest sends bytes as they are and returns the status line and body.
func rawRequest(t *testing.T, base, raw string) (int, string) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, raw)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The token must never leave for anything but the configured vault,
// whatever the client sends.
func TestSSRFVectors(t *testing.T) {
	var evilHits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits.Add(1) }))
	defer evil.Close()
	eh := strings.TrimPrefix(evil.URL, "http://")
	e := setup(t, nil)

	raw := []struct {
		name   string
		req    string
		status int // 0: any answer from the vault
	}{
		{name: "absolute-form target", req: "GET " + evil.URL + "/secrets/db-password HTTP/1.1\r\nHost: " + eh + "\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "absolute-form https target", req: "GET https://" + eh + "/secrets/db-password HTTP/1.1\r\nHost: " + eh + "\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "CONNECT", req: "CONNECT " + eh + " HTTP/1.1\r\nHost: " + eh + "\r\nMetadata: true\r\n\r\n", status: 405},
		{name: "double-slash path", req: "GET //" + eh + "/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "foreign Host header", req: "GET /secrets/db-password HTTP/1.1\r\nHost: evil.example\r\nMetadata: true\r\n\r\n", status: 421},
		{name: "Host of the other server", req: "GET /secrets/db-password HTTP/1.1\r\nHost: " + eh + "\r\nMetadata: true\r\n\r\n"},
		{name: "at-sign path", req: "GET /@" + eh + "/secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n"},
		{name: "forwarded headers", req: "GET /secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: " + eh + "\r\nForwarded: host=" + eh + "\r\nMetadata: true\r\n\r\n"},
		{name: "encoded slashes", req: "GET /%2F%2F" + eh + "/secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n"},
		{name: "backslash path", req: "GET /\\\\" + eh + "/secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n"},
	}
	for _, tt := range raw {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.vault.Requests())
			status, body := rawRequest(t, e.url, tt.req)
			if tt.status != 0 && status != tt.status {
				t.Errorf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.status == 0 && len(e.vault.Requests()) == before {
				t.Errorf("request was neither refused nor sent to the vault (status %d)", status)
			}
			if tt.status != 0 && len(e.vault.Requests()) != before {
				t.Errorf("refused request reached the vault")
			}
		})
	}
	if evilHits.Load() != 0 {
		t.Fatalf("the other host received %d requests", evilHits.Load())
	}
	for _, r := range e.vault.Requests() {
		if r.Header.Get("X-Forwarded-Host") != "" || r.Header.Get("Forwarded") != "" {
			t.Errorf("forwarding headers reached the vault: %v", r.Header)
		}
	}
}

func TestTokenUnavailable(t *testing.T) {
	e := setup(t, nil)
	e.tokens.err = errors.New("the identity endpoint is unreachable (connection refused)")
	resp, body := e.do(t, "GET", "/secrets/db-password", nil)
	assertRefusal(t, resp, body, 503, diagnose.TokenUnavailable)
	if !strings.Contains(string(body), "connection refused") {
		t.Errorf("detail lost: %s", body)
	}
	if len(e.vault.Requests()) != 0 {
		t.Fatal("request without a token reached the vault")
	}
}

func TestUpstreamUnavailable(t *testing.T) {
	t.Run("connection refused is 502", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		e := setup(t, func(o *Options) { o.Vault = &url.URL{Scheme: "https", Host: addr} })
		resp, body := e.do(t, "GET", "/secrets/db-password", nil)
		assertRefusal(t, resp, body, 502, diagnose.UpstreamUnavailable)
	})
	t.Run("timeout is 504", func(t *testing.T) {
		e := setup(t, func(o *Options) { o.UpstreamTimeout = 200 * time.Millisecond })
		e.faults.SetLatency(5 * time.Second)
		resp, body := e.do(t, "GET", "/secrets/db-password", nil)
		assertRefusal(t, resp, body, 504, diagnose.UpstreamUnavailable)
	})
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		status   int
		failures int
		retryMax int
		want     int
		requests int
		reason   string
		retries  float64
	}{
		{name: "GET 429 twice then ok", method: "GET", status: 429, failures: 2, retryMax: 2, want: 200, requests: 3, reason: retryThrottled, retries: 2},
		{name: "GET 429 beyond retry max", method: "GET", status: 429, failures: 3, retryMax: 2, want: 429, requests: 3, reason: retryThrottled, retries: 2},
		{name: "GET 503 then ok", method: "GET", status: 503, failures: 1, retryMax: 2, want: 200, requests: 2, reason: retryUnavailable, retries: 1},
		{name: "PUT 503 not retried", method: "PUT", status: 503, failures: 1, retryMax: 2, want: 503, requests: 1, reason: retryUnavailable, retries: 0},
		{name: "PUT 429 retried", method: "PUT", status: 429, failures: 1, retryMax: 2, want: 200, requests: 2, reason: retryThrottled, retries: 1},
		{name: "retries off", method: "GET", status: 429, failures: 1, retryMax: 0, want: 429, requests: 1, reason: retryThrottled, retries: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, func(o *Options) { o.RetryMax = tt.retryMax })
			e.faults.FailNext(tt.status, tt.failures, "0")
			var body io.Reader
			if tt.method == "PUT" {
				body = strings.NewReader(`{"value":"replayed"}`)
			}
			resp, b := e.do(t, tt.method, "/secrets/db-password", body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, b)
			}
			reqs := e.vault.Requests()
			if len(reqs) != tt.requests {
				t.Fatalf("vault saw %d requests, want %d", len(reqs), tt.requests)
			}
			if tt.method == "PUT" {
				for _, r := range reqs {
					if string(r.Body) != `{"value":"replayed"}` {
						t.Errorf("attempt sent body %q", r.Body)
					}
				}
			}
			if got := testutil.ToFloat64(e.metrics.UpstreamRetries.WithLabelValues(tt.reason)); got != tt.retries {
				t.Errorf("retries{reason=%s} = %v, want %v", tt.reason, got, tt.retries)
			}
		})
	}
}

// A retry wait never outlasts KVPROXY_UPSTREAM_TIMEOUT: with a Retry-After
// beyond the deadline the client gets the 429 at once.
func TestRetryWaitIsBoundedByTheDeadline(t *testing.T) {
	e := setup(t, func(o *Options) { o.RetryMaxWait = time.Minute; o.UpstreamTimeout = 2 * time.Second })
	e.faults.FailNext(429, 5, "30")
	resp, body := e.do(t, "GET", "/secrets/db-password", nil)
	if resp.StatusCode != 429 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if n := len(e.vault.Requests()); n != 1 {
		t.Fatalf("vault saw %d requests", n)
	}
}

func TestUnauthorizedIsRetriedOnceWithANewToken(t *testing.T) {
	expired := azfake.MintToken(azfake.TokenClaims{TenantID: azfake.DefaultTenantID, ObjectID: azfake.DefaultObjectID,
		AppID: azfake.DefaultAppID, Audience: "https://vault.azure.net",
		IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
	e := setup(t, nil)
	e.tokens.next = goodToken()
	ren := e.tokens
	e.tokens.tok = expired
	resp, body := e.do(t, "GET", "/secrets/db-password", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ren.renewed.Load() != 1 || len(e.vault.Requests()) != 2 {
		t.Fatalf("renewed %d times, %d vault requests; want 1 and 2", ren.renewed.Load(), len(e.vault.Requests()))
	}
	if got := testutil.ToFloat64(e.metrics.UpstreamRetries.WithLabelValues(retryUnauthorized)); got != 1 {
		t.Errorf("retries{unauthorized} = %v", got)
	}

	// When renewal yields nothing new, the 401 goes back, diagnosed.
	ren.next = ""
	e.vault.ResetRequests()
	resp, body = e.do(t, "GET", "/secrets/db-password", nil)
	if resp.StatusCode != 401 || resp.Header.Get(HeaderDiagnosis) != diagnose.TokenExpired {
		t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
	}
	if n := len(e.vault.Requests()); n != 1 {
		t.Fatalf("vault saw %d requests, want 1", n)
	}
}

func TestRequestMetrics(t *testing.T) {
	e := setup(t, nil)
	e.do(t, "GET", "/secrets/db-password", nil)
	e.do(t, "GET", "/secrets/missing", nil)
	e.do(t, "GET", "/secrets/db-password", nil, "Metadata", "")
	e.do(t, "PROPFIND", "/x", nil)
	for _, c := range []struct {
		method, code string
		want         float64
	}{{"GET", "200", 1}, {"GET", "404", 1}, {"GET", "400", 1}, {"other", "405", 1}} {
		if got := testutil.ToFloat64(e.metrics.Requests.WithLabelValues(c.method, c.code)); got != c.want {
			t.Errorf("kvproxy_requests_total{method=%s,code=%s} = %v, want %v", c.method, c.code, got, c.want)
		}
	}
	if got := testutil.ToFloat64(e.metrics.Inflight); got != 0 {
		t.Errorf("inflight = %v after all requests ended", got)
	}
	if n := testutil.CollectAndCount(e.metrics.UpstreamDuration); n != 1 {
		t.Errorf("upstream histogram series %d", n)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{name: "seconds", in: "3", want: 3 * time.Second, ok: true},
		{name: "zero", in: "0", want: 0, ok: true},
		{name: "spaces", in: " 7 ", want: 7 * time.Second, ok: true},
		{name: "date", in: now.Add(5 * time.Second).Format(http.TimeFormat), want: 5 * time.Second, ok: true},
		{name: "past date", in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, ok: true},
		{name: "huge", in: "999999999999", want: 86400 * time.Second, ok: true},
		{name: "far future date", in: "Wed, 01 Oct 7000 00:00:00 GMT", want: 24 * time.Hour, ok: true},
		{name: "negative", in: "-1"},
		{name: "empty", in: ""},
		{name: "junk", in: "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.in, now)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "", "9999999999999999999999"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if ok && (d < 0 || d > 24*time.Hour) {
			t.Fatalf("ParseRetryAfter(%q) = %v", s, d)
		}
		if !ok && d != 0 {
			t.Fatalf("not ok but %v", d)
		}
	})
}

func TestHasAPIVersion(t *testing.T) {
	for q, want := range map[string]bool{
		"": false, "api-version=7.5": true, "a=b&api-version=1": true, "api-version=": false,
		"xapi-version=1": false, "maxresults=1": false,
	} {
		if got := hasAPIVersion([]byte(q)); got != want {
			t.Errorf("hasAPIVersion(%q) = %v", q, got)
		}
	}
}

// BenchmarkProxyGet measures kvproxy's own cost per request: policy,
// building the upstream request, token injection, metrics and the debug-level
// check, against an upstream on an in-memory listener (plain HTTP: the TLS
// cost is measured by make bench-e2e against nginx).
func BenchmarkProxyGet(b *testing.B) {
	p, req := inMemoryProxy(b, Options{MaxBodyBytes: 1 << 20})
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		ctx.Init(req, nil, nil)
		p.serve(&ctx, true)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(ctx.Response.StatusCode())
		}
	}
}

// inMemoryProxy is a Proxy with o (Vault, Tokens, Metrics and the Metadata
// check filled in) whose upstream is a plain-HTTP server on an in-memory
// listener answering a secret, and a request for that secret.
func inMemoryProxy(b *testing.B, o Options) (*Proxy, *fasthttp.Request) {
	b.Helper()
	ln := fasthttputil.NewInmemoryListener()
	b.Cleanup(func() { ln.Close() })
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"value":"v","id":"https://v.vault.azure.net/secrets/s/0123456789abcdef0123456789abcdef"}`)
	}}
	go up.Serve(ln) //nolint:errcheck
	o.Vault, o.Tokens, o.RequireMetadata = &url.URL{Scheme: "https", Host: "v.vault.azure.net"}, &staticTokens{tok: goodToken()}, true
	o.Metrics = metrics.New(prometheus.NewRegistry())
	p, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	p.client.IsTLS, p.scheme = false, "http"
	p.client.DialTimeout = func(string, time.Duration) (net.Conn, error) { return ln.Dial() }
	req := new(fasthttp.Request)
	req.SetRequestURI("/secrets/s?api-version=7.5")
	req.Header.SetHost("127.0.0.1:8380")
	req.Header.Set("Metadata", "true")
	return p, req
}

func TestDiagnosesThroughTheProxy(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		status int
		code   string
		check  func(t *testing.T, d map[string]any)
	}{
		{name: "firewall", secret: azfake.SecretForbiddenFirewall, status: 403, code: diagnose.ForbiddenByFirewall, check: func(t *testing.T, d map[string]any) {
			if d["clientAddress"] != "127.0.0.1" {
				t.Errorf("clientAddress %v", d["clientAddress"])
			}
		}},
		{name: "rbac", secret: azfake.SecretForbiddenRBAC, status: 403, code: diagnose.ForbiddenByRBAC, check: func(t *testing.T, d map[string]any) {
			if d["suggestedRole"] != "Key Vault Secrets User" || !strings.HasPrefix(d["fix"].(string), "az role assignment create") {
				t.Errorf("role %v fix %v", d["suggestedRole"], d["fix"])
			}
		}},
		{name: "access policy", secret: azfake.SecretForbiddenPolicy, status: 403, code: diagnose.ForbiddenByPolicy},
		{name: "private link", secret: azfake.SecretForbiddenPrivateLink, status: 403, code: diagnose.ForbiddenByPrivateLink},
		{name: "other 403", secret: azfake.SecretForbiddenDisabled, status: 403, code: diagnose.Forbidden},
		{name: "tenant", secret: azfake.SecretUnauthorizedTenant, status: 401, code: diagnose.TenantMismatch, check: func(t *testing.T, d map[string]any) {
			if d["actualTenant"] != azfake.ForeignTenantID || d["expectedTenant"] != azfake.DefaultTenantID {
				t.Errorf("tenants: actual %v expected %v", d["actualTenant"], d["expectedTenant"])
			}
		}},
		{name: "audience", secret: azfake.SecretUnauthorizedAudience, status: 401, code: diagnose.AudienceMismatch, check: func(t *testing.T, d map[string]any) {
			if strings.Contains(d["detail"].(string), "should be https://vault.azure.net/.default") {
				t.Errorf("advises the scope already in use: %v", d["detail"])
			}
		}},
		{name: "expired", secret: azfake.SecretUnauthorizedExpired, status: 401, code: diagnose.TokenExpired},
		{name: "rejected", secret: azfake.SecretUnauthorizedRejected, status: 401, code: diagnose.TokenRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, nil)
			resp, body := e.do(t, "GET", "/secrets/"+tt.secret, nil)
			if !slices.Contains(diagnose.Codes(), tt.code) {
				t.Errorf("%q is missing from diagnose.Codes()", tt.code)
			}
			if resp.StatusCode != tt.status || resp.Header.Get(HeaderDiagnosis) != tt.code {
				t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d for a %d-byte body", resp.ContentLength, len(body))
			}
			var v struct {
				Error   map[string]any `json:"error"`
				Kvproxy map[string]any `json:"kvproxy"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatal(err)
			}
			if v.Error["code"] == nil || v.Error["message"] == nil {
				t.Errorf("the vault's error object was not kept: %s", body)
			}
			id, _ := v.Kvproxy["identity"].(map[string]any)
			if v.Kvproxy["diagnosis"] != tt.code || v.Kvproxy["detail"] == "" || id["oid"] != azfake.DefaultObjectID || v.Kvproxy["requestId"] == "" {
				t.Errorf("kvproxy object: %v", v.Kvproxy)
			}
			if strings.Contains(string(body), e.tokens.tok) {
				t.Fatal("the token is in the response")
			}
			if tt.check != nil {
				tt.check(t, v.Kvproxy)
			}
			if got := testutil.ToFloat64(e.metrics.Diagnoses.WithLabelValues(tt.code)); got != 1 {
				t.Errorf("kvproxy_diagnoses_total{diagnosis=%q} = %v", tt.code, got)
			}
		})
	}
}
