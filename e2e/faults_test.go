package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// The fault suite runs kvproxy with a short deadline so that every case
// ends quickly; the bounds below are far above what a case needs on an idle
// machine, so a slow (or -race) run passes, while a request kvproxy leaves
// hanging fails it.
const (
	faultTimeout = time.Second           // KVPROXY_UPSTREAM_TIMEOUT
	faultAnswer  = 3 * time.Second       // every answer comes within this
	faultGiveUp  = 10 * time.Second      // the test's client stops waiting here
	faultRecover = 20 * time.Second      // a normal read works again within this of the fault's end
	faultRetries = 2                     // KVPROXY_RETRY_MAX
	faultPoll    = 50 * time.Millisecond // between requests that poll kvproxy
)

// faultEnv is the configuration of every kvproxy of the fault suite.
var faultEnv = map[string]string{
	"KVPROXY_UPSTREAM_TIMEOUT": faultTimeout.String(),
	"KVPROXY_RETRY_MAX":        fmt.Sprint(faultRetries),
	"KVPROXY_RETRY_MAX_WAIT":   "100ms",
}

// faultCodes are the error.code of kvproxy's own answers by status: the
// vault unreachable, too slow, or no token.
var faultCodes = map[int]string{
	http.StatusBadGateway:         "UpstreamUnavailable",
	http.StatusGatewayTimeout:     "UpstreamTimeout",
	http.StatusServiceUnavailable: "TokenUnavailable",
}

// doWithin sends one request to kvproxy and gives up after faultGiveUp;
// a PUT carries {"value": value}. It returns the answer and how long it took.
func (p *proc) doWithin(method, path, value string) (response, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), faultGiveUp)
	defer cancel()
	var body io.Reader
	if method == http.MethodPut {
		b, _ := json.Marshal(map[string]string{"value": value})
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.proxyURL(path), body)
	if err != nil {
		return response{}, 0, err
	}
	req.Header.Set("Metadata", "true")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	r, err := doRequest(p.client, req)
	return r, time.Since(start), err
}

// checkAlive asserts that kvproxy still runs and has not panicked.
func checkAlive(t *testing.T, p *proc) {
	t.Helper()
	if p.exited() {
		code, _ := p.wait(0)
		t.Fatalf("kvproxy exited with code %d", code)
	}
	if strings.Contains(p.stderr.String(), "panic") {
		t.Fatalf("kvproxy's stderr mentions a panic")
	}
	if r, err := p.adminGet("/healthz"); err != nil || r.Status != http.StatusOK {
		t.Errorf("/healthz: %d %v", r.Status, err)
	}
}

// checkRecovered asserts that a normal read works again, without a
// restart, within faultRecover, and that no request is left in flight.
func checkRecovered(t *testing.T, p *proc) {
	t.Helper()
	azfaketest.Eventually(t, faultRecover, "a normal read to work again", func() (bool, string) {
		r, _, err := p.doWithin(http.MethodGet, "/secrets/db-password", "")
		if err != nil {
			return false, err.Error()
		}
		var b secretBundle
		_ = json.Unmarshal(r.Body, &b)
		if r.Status != http.StatusOK || b.Value != seededValue {
			time.Sleep(faultPoll)
			return false, fmt.Sprintf("%d %s", r.Status, r.Body)
		}
		return true, ""
	})
	azfaketest.Eventually(t, faultRecover, "kvproxy_inflight_requests to return to 0", func() (bool, string) {
		v := metric(p.metricsOf(t), "kvproxy_inflight_requests", nil)
		return v == 0, fmt.Sprint("kvproxy_inflight_requests ", v)
	})
}

// countRequests counts the vault's recorded requests with a token for
// method and path.
func countRequests(v *azfaketest.Vault, method, path string) int {
	n := 0
	for _, r := range tokenRequests(v) {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// TestFaults: the vault or the identity endpoint misbehaves in one way;
// kvproxy must not panic, must answer within the deadline with a JSON body
// naming the diagnosis, must not send a write twice, and must work again
// once the fault ends, without a restart. Related cases elsewhere: a vault
// that is closed, answers headers late to a GET or has an untrusted
// certificate, and an identity endpoint that hangs or answers 500
// (TestUpstreamFailures, TestIdentityEndpointDownAtStart); single 429s and
// 5xx and their retries (TestThrottlingRetries); 5xx storms (TestFaultStorms).
func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// cold: the fault is on before kvproxy starts, so its first token
		// fetch meets it; otherwise it starts once kvproxy is ready.
		cold   bool
		inject func(f *fakes)
		clear  func(f *fakes)
		method string // GET or PUT; a PUT writes the case's name
		path   string
		status int
		// diagnosis is the X-Kvproxy-Diagnosis wanted, "" for an answer of
		// the vault's own; detail is a word kvproxy.detail must hold, and
		// later a word it must come to hold while the fault lasts (as a
		// failing token fetch gets to its end).
		diagnosis, detail, later string
		// vault bounds the requests for method and path the vault receives
		// while the fault lasts.
		minVault, maxVault int
		// notDetail is a phrase kvproxy.detail must not hold.
		notDetail string
		// applied: a PUT the vault carried out before the answer was lost;
		// its secret must then hold exactly one version.
		applied bool
	}{
		{
			name:   "vault resets one GET mid-answer",
			inject: func(f *fakes) { f.Vault.Faults.ResetNext(1) },
			clear:  func(f *fakes) { f.Vault.Faults.ResetNext(0) },
			method: http.MethodGet, path: "/secrets/db-password",
			// The pool sends a GET once more on a new connection (the README:
			// only GET and HEAD are retried after a transport error).
			status: http.StatusOK, minVault: 2, maxVault: 2,
		},
		{
			name:   "vault resets every GET mid-answer",
			inject: func(f *fakes) { f.Vault.Faults.ResetNext(1 << 30) },
			clear:  func(f *fakes) { f.Vault.Faults.ResetNext(0) },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusBadGateway, diagnosis: "upstream-unavailable", detail: "reset",
			minVault: 1, maxVault: 2, // the first try and the pool's one retry, if the deadline leaves time
		},
		{
			name:   "vault resets a PUT mid-answer",
			inject: func(f *fakes) { f.Vault.Faults.ResetNext(1 << 30) },
			clear:  func(f *fakes) { f.Vault.Faults.ResetNext(0) },
			method: http.MethodPut, path: "/secrets/fault-reset-put",
			status: http.StatusBadGateway, diagnosis: "upstream-unavailable", detail: "reset",
			minVault: 1, maxVault: 1, applied: true,
		},
		{
			// The vault was reached and did the work: "could not be reached"
			// (and its advice about DNS, firewalls and CA bundles) is wrong,
			// and invites the client to send a write again blindly.
			name:   "vault resets a PUT mid-answer: the detail does not say unreachable",
			inject: func(f *fakes) { f.Vault.Faults.ResetNext(1 << 30) },
			clear:  func(f *fakes) { f.Vault.Faults.ResetNext(0) },
			method: http.MethodPut, path: "/secrets/fault-reset-put-detail",
			status: http.StatusBadGateway, diagnosis: "upstream-unavailable", detail: "reset", notDetail: "could not be reached",
			minVault: 1, maxVault: 1, applied: true,
		},
		{
			// The GET of this is TestUpstreamFailures' "vault too slow".
			name:   "vault sends a PUT's headers late",
			inject: func(f *fakes) { f.Vault.Faults.SetLatency(5 * time.Second) },
			clear:  func(f *fakes) { f.Vault.Faults.SetLatency(0) },
			method: http.MethodPut, path: "/secrets/fault-slow-headers-put",
			status: http.StatusGatewayTimeout, diagnosis: "upstream-unavailable", detail: "in time",
			minVault: 1, maxVault: 1,
		},
		{
			name:   "vault trickles a GET's body",
			inject: func(f *fakes) { f.Vault.Faults.SetSlowBody(200 * time.Millisecond) },
			clear:  func(f *fakes) { f.Vault.Faults.SetSlowBody(0) },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusGatewayTimeout, diagnosis: "upstream-unavailable", detail: "in time",
			minVault: 1, maxVault: 2,
		},
		{
			name:   "vault trickles a PUT's body",
			inject: func(f *fakes) { f.Vault.Faults.SetSlowBody(200 * time.Millisecond) },
			clear:  func(f *fakes) { f.Vault.Faults.SetSlowBody(0) },
			method: http.MethodPut, path: "/secrets/fault-slow-body-put",
			status: http.StatusGatewayTimeout, diagnosis: "upstream-unavailable", detail: "in time",
			minVault: 1, maxVault: 1, applied: true,
		},
		{
			name:   "TLS black hole",
			inject: func(f *fakes) { f.Vault.Faults.SetBlackHole(true) },
			clear:  func(f *fakes) { f.Vault.Faults.SetBlackHole(false) },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusGatewayTimeout, diagnosis: "upstream-unavailable", detail: "in time",
		},
		{
			name: "identity endpoint answers 429 with Retry-After", cold: true,
			inject: func(f *fakes) { f.IDs.Faults.FailNext(http.StatusTooManyRequests, 1<<30, "1") },
			clear:  func(f *fakes) { f.IDs.Faults.FailNext(0, 0, "") },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusServiceUnavailable, diagnosis: "token-unavailable", detail: "identity endpoint", later: "429",
		},
		{
			name: "identity endpoint slow", cold: true,
			inject: func(f *fakes) { f.IDs.Faults.SetLatency(3 * time.Second) },
			clear:  func(f *fakes) { f.IDs.Faults.SetLatency(0) },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusServiceUnavailable, diagnosis: "token-unavailable", detail: "slow",
		},
		{
			name: "identity endpoint answers JSON of the wrong shape", cold: true,
			inject: func(f *fakes) {
				f.IDs.Faults.SetRawAnswer(http.StatusOK, "application/json", `{"access_token": 5, "expires_on": "1", "token_type": "Bearer"}`)
			},
			clear:  func(f *fakes) { f.IDs.Faults.SetRawAnswer(0, "", "") },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusServiceUnavailable, diagnosis: "token-unavailable", detail: "access_token",
		},
		{
			name: "identity endpoint answers truncated JSON", cold: true,
			inject: func(f *fakes) {
				f.IDs.Faults.SetRawAnswer(http.StatusOK, "application/json", `{"access_token":"eyJ0eXAiOiJKV1Qi`)
			},
			clear:  func(f *fakes) { f.IDs.Faults.SetRawAnswer(0, "", "") },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusServiceUnavailable, diagnosis: "token-unavailable", detail: "JSON",
		},
		{
			name: "identity endpoint answers an HTML page", cold: true,
			inject: func(f *fakes) {
				f.IDs.Faults.SetRawAnswer(http.StatusBadGateway, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>")
			},
			clear:  func(f *fakes) { f.IDs.Faults.SetRawAnswer(0, "", "") },
			method: http.MethodGet, path: "/secrets/db-password",
			status: http.StatusServiceUnavailable, diagnosis: "token-unavailable", detail: "identity endpoint", later: "502",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
			t.Cleanup(func() { tc.clear(f) }) // before the fakes close: nothing stays held
			if tc.cold {
				tc.inject(f)
			}
			p := startKV(t, f, faultEnv)
			if !tc.cold {
				p.waitReady(t, 20*time.Second)
				tc.inject(f)
			}

			r, took, err := p.doWithin(tc.method, tc.path, tc.name)
			if err != nil {
				t.Fatalf("%s %s: no answer after %v: %v", tc.method, tc.path, took.Round(time.Millisecond), err)
			}
			if took > faultAnswer {
				t.Errorf("answered after %v; KVPROXY_UPSTREAM_TIMEOUT is %v", took.Round(time.Millisecond), faultTimeout)
			}
			var detail string
			if tc.diagnosis != "" {
				e := checkRefusal(t, r, tc.status, tc.diagnosis)
				if e.Error.Code != faultCodes[tc.status] {
					t.Errorf("error.code %q, want %q", e.Error.Code, faultCodes[tc.status])
				}
				detail = e.Kvproxy.Detail
				if !strings.Contains(detail, tc.detail) {
					t.Errorf("detail %q does not say %q", detail, tc.detail)
				}
				if tc.notDetail != "" && strings.Contains(detail, tc.notDetail) {
					t.Errorf("detail %q says %q", detail, tc.notDetail)
				}
			} else if r.Status != tc.status {
				t.Errorf("status %d, want %d; body %s", r.Status, tc.status, r.Body)
			}
			if tc.later != "" {
				azfaketest.Eventually(t, faultRecover, fmt.Sprintf("kvproxy.detail to say %q", tc.later), func() (bool, string) {
					r, took, err := p.doWithin(tc.method, tc.path, tc.name)
					if err != nil || took > faultAnswer || r.Status != tc.status || r.Header.Get("X-Kvproxy-Diagnosis") != tc.diagnosis {
						t.Fatalf("while the fault lasts: %d %q after %v (%v): %s", r.Status, r.Header.Get("X-Kvproxy-Diagnosis"), took, err, r.Body)
					}
					detail = decodeError(t, r).Kvproxy.Detail
					if !strings.Contains(detail, tc.later) {
						time.Sleep(faultPoll)
						return false, detail
					}
					return true, detail
				})
			}
			// A failing identity endpoint is not asked more often for it:
			// about once a second (azcore's retries of one fetch, then
			// kvproxy's), with room for the start.
			if n, limit := f.IDs.Requests(), 2*int(time.Since(start)/time.Second)+5; n > limit {
				t.Errorf("the identity endpoint received %d requests in %v, want at most %d", n, time.Since(start).Round(time.Millisecond), limit)
			}
			if n := countRequests(f.Vault, tc.method, tc.path); n < tc.minVault || n > tc.maxVault {
				t.Errorf("the vault received %s %s %d times, want %d to %d", tc.method, tc.path, n, tc.minVault, tc.maxVault)
			}
			checkAlive(t, p)

			cleared := time.Now()
			tc.clear(f)
			checkRecovered(t, p)
			recovered := time.Since(cleared)
			checkAlive(t, p)
			if tc.method == http.MethodPut {
				checkWrittenOnce(t, p, f, tc.path, tc.name, tc.applied)
			}
			mfs := p.metricsOf(t)
			if tc.diagnosis != "" {
				if v := metric(mfs, "kvproxy_diagnoses_total", map[string]string{"diagnosis": tc.diagnosis}); v < 1 {
					t.Errorf("kvproxy_diagnoses_total{diagnosis=%q} = %v", tc.diagnosis, v)
				}
			}
			if v := metric(mfs, "kvproxy_ready", nil); v != 1 {
				t.Errorf("kvproxy_ready = %v after recovery", v)
			}
			t.Logf("answered %d %s after %v; detail %q; recovered %v after the fault ended", r.Status, tc.diagnosis,
				took.Round(time.Millisecond), detail, recovered.Round(time.Millisecond))
		})
	}
}

// checkWrittenOnce asserts that a PUT of value to path whose answer was
// lost reached the vault once and left at most one version (exactly one
// when the vault applied it), holding value.
func checkWrittenOnce(t *testing.T, p *proc, f *fakes, path, value string, applied bool) {
	t.Helper()
	if n := countRequests(f.Vault, http.MethodPut, path); n != 1 {
		t.Errorf("the vault received PUT %s %d times, want 1", path, n)
	}
	r, _, err := p.doWithin(http.MethodGet, path+"/versions", "")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Value []json.RawMessage `json:"value"`
	}
	_ = json.Unmarshal(r.Body, &list)
	switch {
	case r.Status == http.StatusNotFound && !applied:
	case r.Status != http.StatusOK || len(list.Value) != 1:
		t.Errorf("versions of %s: %d %s; want one version", path, r.Status, r.Body)
	default:
		got, _, err := p.doWithin(http.MethodGet, path, "")
		if err != nil || decodeSecret(t, got).Value != value {
			t.Errorf("GET %s: %v %s; want %q", path, err, got.Body, value)
		}
	}
}

// TestFaultStorms: while the vault answers every request with a 5xx,
// concurrent GETs and PUTs all get the vault's error within the deadline
// (a 503 is retried for a GET up to KVPROXY_RETRY_MAX times, never for a
// PUT; a 500 is not retried), no PUT reaches the vault twice, readiness
// holds (it depends on the token only), and reads work again once the storm
// ends. The answers are the vault's own JSON error bodies, with
// X-Kvproxy-Diagnosis vault-unavailable and a "kvproxy" member beside the
// vault's "error".
func TestFaultStorms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		code       string // the vault's error.code
		getRetries int    // retries of one GET
	}{
		{"503 storm", http.StatusServiceUnavailable, "ServiceUnavailable", faultRetries},
		{"500 storm", http.StatusInternalServerError, "InternalServerError", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
			p := startKV(t, f, faultEnv)
			p.waitReady(t, 20*time.Second)
			f.Vault.Faults.FailNext(tc.status, 1<<30, "")
			t.Cleanup(func() { f.Vault.Faults.FailNext(0, 0, "") })

			const (
				workers  = 4
				duration = 1500 * time.Millisecond
				maxSent  = 400 // the storm ends at duration or after maxSent requests
			)
			var sent, gets, puts atomic.Int64
			var mu sync.Mutex
			var bad []string
			stop := time.Now().Add(duration)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := 0; time.Now().Before(stop) && sent.Add(1) <= maxSent; i++ {
						method, path := http.MethodGet, "/secrets/db-password"
						if (w+i)%2 == 1 {
							method, path = http.MethodPut, fmt.Sprintf("/secrets/storm-%d-%d", w, i)
							puts.Add(1)
						} else {
							gets.Add(1)
						}
						r, took, err := p.doWithin(method, path, "v")
						var e kvError
						_ = json.Unmarshal(r.Body, &e)
						if err != nil || took > faultAnswer || r.Status != tc.status || e.Error.Code != tc.code || r.Header.Get("x-ms-request-id") == "" ||
							r.Header.Get("X-Kvproxy-Diagnosis") != "vault-unavailable" || e.Kvproxy == nil || e.Kvproxy.Diagnosis != "vault-unavailable" {
							mu.Lock()
							bad = append(bad, fmt.Sprintf("%s %s: %d after %v (%v): %s", method, path, r.Status, took.Round(time.Millisecond), err, r.Body))
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			if len(bad) > 0 {
				t.Errorf("%d of %d answers were not the vault's %d within %v; first: %s", len(bad), gets.Load()+puts.Load(), tc.status, faultAnswer, bad[0])
			}
			if puts.Load() == 0 || gets.Load() == 0 {
				t.Fatalf("the storm did not run: %d GETs, %d PUTs", gets.Load(), puts.Load())
			}
			vaultGets := 0
			perPut := map[string]int{}
			for _, r := range tokenRequests(f.Vault) {
				switch r.Method {
				case http.MethodGet:
					vaultGets++
				case http.MethodPut:
					perPut[r.Path]++
				}
			}
			if g := int(gets.Load()); vaultGets < g || vaultGets > g*(1+tc.getRetries) {
				t.Errorf("%d GETs reached the vault as %d requests, want %d to %d", g, vaultGets, g, g*(1+tc.getRetries))
			}
			if len(perPut) != int(puts.Load()) {
				t.Errorf("%d PUTs reached the vault on %d paths", puts.Load(), len(perPut))
			}
			for path, n := range perPut {
				if n != 1 {
					t.Errorf("PUT %s reached the vault %d times", path, n)
				}
			}
			if r, err := p.adminGet("/readyz"); err != nil || r.Status != http.StatusOK {
				t.Errorf("/readyz during the storm: %d %v %s", r.Status, err, r.Body)
			}
			mfs := p.metricsOf(t)
			retried := metric(mfs, "kvproxy_upstream_retries_total", map[string]string{"reason": "unavailable"})
			if want := float64(vaultGets) - float64(gets.Load()); retried != want {
				t.Errorf("kvproxy_upstream_retries_total{reason=unavailable} = %v, want %v (the GETs sent again)", retried, want)
			}
			for method, n := range map[string]int64{http.MethodGet: gets.Load(), http.MethodPut: puts.Load()} {
				labels := map[string]string{"method": method, "code": fmt.Sprint(tc.status)}
				if v := metric(mfs, "kvproxy_requests_total", labels); v != float64(n) {
					t.Errorf("kvproxy_requests_total%v = %v, want %d", labels, v, n)
				}
			}
			checkAlive(t, p)
			t.Logf("%d GETs (%d vault requests) and %d PUTs in %v", gets.Load(), vaultGets, puts.Load(), duration)

			f.Vault.Faults.FailNext(0, 0, "")
			checkRecovered(t, p)
		})
	}
}
