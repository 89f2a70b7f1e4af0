package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// diagCase is one of the vault's special secret names and what kvproxy
// must make of it.
type diagCase struct {
	name   string // the secret name
	status int
	diag   string
	// The vault's own error object, which must arrive intact.
	code, inner, message string
	check                func(t *testing.T, d *diagnosis)
}

var diagCases = []diagCase{
	{name: azfake.SecretForbiddenFirewall, status: 403, diag: "forbidden-by-firewall",
		code: "Forbidden", inner: "ForbiddenByFirewall", message: "Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\n",
		check: func(t *testing.T, d *diagnosis) {
			if d.ClientAddress != "127.0.0.1" || !strings.Contains(d.Detail, "127.0.0.1") {
				t.Errorf("clientAddress %q, detail %q: want the client address 127.0.0.1 named", d.ClientAddress, d.Detail)
			}
			if !strings.Contains(d.Fix, "az keyvault network-rule add") || !strings.Contains(d.Fix, "127.0.0.1/32") {
				t.Errorf("fix %q", d.Fix)
			}
		}},
	{name: azfake.SecretForbiddenPrivateLink, status: 403, diag: "forbidden-by-private-link",
		code: "Forbidden", inner: "ForbiddenByConnection", message: "Connection is not an approved private link",
		check: func(t *testing.T, d *diagnosis) {
			if !strings.Contains(d.Detail, "private endpoint") {
				t.Errorf("detail %q does not mention the private endpoint", d.Detail)
			}
		}},
	{name: azfake.SecretForbiddenRBAC, status: 403, diag: "forbidden-by-rbac",
		code: "Forbidden", inner: "ForbiddenByRbac", message: "Caller is not authorized to perform action on resource.\r\n",
		check: func(t *testing.T, d *diagnosis) {
			const action = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
			if d.Action != action || !strings.Contains(d.Detail, action) {
				t.Errorf("action %q, detail %q: want %s", d.Action, d.Detail, action)
			}
			if d.SuggestedRole != "Key Vault Secrets User" || !strings.Contains(d.Detail, "Key Vault Secrets User") {
				t.Errorf("suggested role %q, detail %q: want Key Vault Secrets User", d.SuggestedRole, d.Detail)
			}
			for _, w := range []string{"az role assignment create", `--role "Key Vault Secrets User"`, "--assignee-object-id " + azfake.DefaultObjectID} {
				if !strings.Contains(d.Fix, w) {
					t.Errorf("fix %q lacks %q", d.Fix, w)
				}
			}
		}},
	{name: azfake.SecretForbiddenPolicy, status: 403, diag: "forbidden-by-access-policy",
		code: "Forbidden", inner: "ForbiddenByPolicy", message: "does not have secrets get permission on key vault",
		check: func(t *testing.T, d *diagnosis) {
			if d.Permission != "secrets get" {
				t.Errorf("permission %q, want secrets get", d.Permission)
			}
			for _, w := range []string{"az keyvault set-policy", "--object-id " + azfake.DefaultObjectID, "--secret-permissions get"} {
				if !strings.Contains(d.Fix, w) {
					t.Errorf("fix %q lacks %q", d.Fix, w)
				}
			}
		}},
	{name: azfake.SecretForbiddenDisabled, status: 403, diag: "forbidden",
		code: "Forbidden", inner: "SecretDisabled", message: "Operation get is not allowed on a disabled secret.",
		check: func(t *testing.T, d *diagnosis) {
			if d.VaultCode != "SecretDisabled" || !strings.Contains(d.Detail, "SecretDisabled") {
				t.Errorf("vaultCode %q, detail %q: want SecretDisabled named", d.VaultCode, d.Detail)
			}
		}},
	{name: azfake.SecretUnauthorizedTenant, status: 401, diag: "tenant-mismatch",
		code: "Unauthorized", message: "AKV10032: Invalid issuer.",
		check: func(t *testing.T, d *diagnosis) {
			// The vault says it found a token of ForeignTenantID while it
			// belongs to DefaultTenantID; the diagnosis must name both.
			if d.ExpectedTenant != azfake.DefaultTenantID {
				t.Errorf("expectedTenant %q, want the vault's tenant %s", d.ExpectedTenant, azfake.DefaultTenantID)
			}
			if d.ActualTenant == d.ExpectedTenant {
				t.Errorf("actualTenant = expectedTenant = %q: a tenant mismatch between a tenant and itself (the vault reported issuer tenant %s)", d.ActualTenant, azfake.ForeignTenantID)
			}
			for _, tid := range []string{azfake.DefaultTenantID, azfake.ForeignTenantID} {
				if !strings.Contains(d.Detail, tid) {
					t.Errorf("detail does not name tenant %s: %q", tid, d.Detail)
				}
			}
		}},
	{name: azfake.SecretUnauthorizedAudience, status: 401, diag: "audience-mismatch",
		code: "Unauthorized", message: "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://storage.azure.com.",
		check: func(t *testing.T, d *diagnosis) {
			if d.ExpectedAudience != "https://vault.azure.net" || d.ActualAudience != "https://storage.azure.com" {
				t.Errorf("expected/actual audience %q/%q", d.ExpectedAudience, d.ActualAudience)
			}
			for _, w := range []string{"https://vault.azure.net", "https://storage.azure.com"} {
				if !strings.Contains(d.Detail, w) {
					t.Errorf("detail does not name %s: %q", w, d.Detail)
				}
			}
			// The configured scope already is the vault's: advice to set it
			// to the value it has would send the user in a circle.
			if bad := "KVPROXY_TOKEN_SCOPE=" + vaultScope + " should be " + vaultScope; strings.Contains(d.Detail, bad) {
				t.Errorf("detail tells the user to change KVPROXY_TOKEN_SCOPE to the value it already has: %q", d.Detail)
			}
		}},
	{name: azfake.SecretUnauthorizedRejected, status: 401, diag: "token-rejected",
		code: "Unauthorized", message: "AKV10046: Unable to resolve the key used for signature validation.",
		check: func(t *testing.T, d *diagnosis) {
			if !strings.Contains(d.Detail, "AKV10046") {
				t.Errorf("detail does not quote the vault's message: %q", d.Detail)
			}
		}},
	{name: azfake.SecretUnauthorizedExpired, status: 401, diag: "token-expired",
		code: "Unauthorized", message: "[TokenExpired]",
		check: func(t *testing.T, d *diagnosis) {
			if d.TokenExpiresAt == "" || !strings.Contains(strings.ToLower(d.Detail), "expired") {
				t.Errorf("tokenExpiresAt %q, detail %q", d.TokenExpiresAt, d.Detail)
			}
		}},
}

// TestDiagnoses requests each special secret name of the fake vault and
// checks the vault's error arrives intact with kvproxy's diagnosis beside
// it. Against identity tokens azidentity caches (24h), a 401 cannot be
// retried with another token; against short-lived ones (2 min, never
// cached), it is retried exactly once with a new token.
func TestDiagnoses(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name      string
		lifetime  time.Duration
		renewable bool
	}{
		{name: "cached token", lifetime: 24 * time.Hour},
		{name: "renewable token", lifetime: 2 * time.Minute, renewable: true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{Lifetime: mode.lifetime})
			// kvproxy renews a rejected token at most once per
			// KVPROXY_TOKEN_RETRY_INTERVAL (a vault answering 401 must not
			// drive the identity endpoint); a short one keeps the cases quick.
			const retryInterval = 50 * time.Millisecond
			p := startKV(t, f, map[string]string{"KVPROXY_TOKEN_RETRY_INTERVAL": retryInterval.String()})
			p.waitReady(t, 20*time.Second)
			retries401 := 0
			var renewedBy time.Time // the last renewal happened before this
			for _, tc := range diagCases {
				t.Run(tc.name, func(t *testing.T) {
					f.Vault.ResetRequests()
					if tc.status == http.StatusUnauthorized && mode.renewable {
						// The renewal of the previous case happened before
						// its answer arrived; the next is allowed once
						// retryInterval has passed since then.
						azfaketest.Eventually(t, 5*time.Second, "the renewal interval to pass", func() (bool, string) {
							return time.Since(renewedBy) > retryInterval, "last renewal before " + renewedBy.Format(time.StampMicro)
						})
					}
					idBefore := f.IDs.Requests()
					r := p.get(t, "/secrets/"+tc.name)
					renewedBy = time.Now()
					e := checkRefusal(t, r, tc.status, tc.diag)
					if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.message) {
						t.Errorf("the vault's error is not intact: code %q message %q; want code %q, message containing %q", e.Error.Code, e.Error.Message, tc.code, tc.message)
					}
					switch {
					case tc.inner == "" && e.Error.InnerError != nil:
						t.Errorf("innererror %+v appeared", e.Error.InnerError)
					case tc.inner != "" && (e.Error.InnerError == nil || e.Error.InnerError.Code != tc.inner):
						t.Errorf("innererror %+v, want code %q", e.Error.InnerError, tc.inner)
					}
					d := e.Kvproxy
					if d.Identity.TenantID != azfake.DefaultTenantID || d.Identity.ObjectID != azfake.DefaultObjectID || d.Identity.AppID != azfake.DefaultAppID {
						t.Errorf("identity %+v, want tid %s oid %s appid %s", d.Identity, azfake.DefaultTenantID, azfake.DefaultObjectID, azfake.DefaultAppID)
					}
					if d.Vault != "127.0.0.1" {
						t.Errorf("vault %q, want 127.0.0.1", d.Vault)
					}
					if id := r.Header.Get("x-ms-request-id"); id == "" || d.RequestID != id {
						t.Errorf("requestId %q, x-ms-request-id %q", d.RequestID, id)
					}
					if tc.status == http.StatusUnauthorized && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer ") {
						t.Errorf("the vault's challenge did not reach the client: WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
					}
					tc.check(t, d)

					reqs := tokenRequests(f.Vault)
					want := 1
					transient := tc.name == azfake.SecretUnauthorizedRejected // AKV10046: resent once after a pause
					if tc.status == http.StatusUnauthorized && mode.renewable {
						want = 2
						retries401++
					} else if transient {
						want = 2 // the same token, sent again
					}
					if len(reqs) != want {
						t.Fatalf("the vault received %d requests for one client request, want %d", len(reqs), want)
					}
					if want == 2 && mode.renewable {
						if reqs[0].Token == reqs[1].Token {
							t.Error("the 401 was retried with the token the vault had just rejected")
						}
						if reqs[1].Claims == nil || !reqs[1].Claims.ExpiresAt.After(time.Now()) {
							t.Error("the retry carried an invalid token")
						}
						if got := f.IDs.Requests() - idBefore; got != 1 {
							t.Errorf("%d token requests for one renewal, want 1", got)
						}
					}
				})
			}
			t.Run("metrics", func(t *testing.T) {
				mfs := p.metricsOf(t)
				for _, tc := range diagCases {
					if got := metric(mfs, "kvproxy_diagnoses_total", map[string]string{"diagnosis": tc.diag}); got != 1 {
						t.Errorf("kvproxy_diagnoses_total{diagnosis=%q} = %v, want 1", tc.diag, got)
					}
				}
				got, ok := metricValue(mfs, "kvproxy_upstream_retries_total", map[string]string{"reason": "unauthorized"})
				if mode.renewable && !ok {
					t.Errorf("kvproxy_upstream_retries_total{reason=unauthorized} is not exported after %d renewals", retries401)
				}
				if got != float64(retries401) {
					t.Errorf("kvproxy_upstream_retries_total{reason=unauthorized} = %v, want %d", got, retries401)
				}
			})
		})
	}
}

// TestThrottlingRetries: 429s are retried (any method), 503s only for GET
// and HEAD, at most KVPROXY_RETRY_MAX times.
func TestThrottlingRetries(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	procs := map[string]*proc{
		"default":   startKV(t, f, nil),
		"retryMax1": startKV(t, f, map[string]string{"KVPROXY_RETRY_MAX": "1"}),
	}
	for _, p := range procs {
		p.waitReady(t, 20*time.Second)
	}
	tests := []struct {
		name       string
		proc       string
		failStatus int
		failN      int
		retryAfter string
		method     string
		path       string
		wantStatus int
		wantVault  int
		reason     string // retry reason counted
	}{
		{name: "two 429s then success", proc: "default", failStatus: 429, failN: 2, retryAfter: "0",
			method: "GET", path: "/secrets/db-password", wantStatus: 200, wantVault: 3, reason: "throttled"},
		{name: "429 on a PUT is retried", proc: "default", failStatus: 429, failN: 1, retryAfter: "0",
			method: "PUT", path: "/secrets/throttled-put", wantStatus: 200, wantVault: 2, reason: "throttled"},
		{name: "503 on a GET is retried", proc: "default", failStatus: 503, failN: 1, retryAfter: "0",
			method: "GET", path: "/secrets/db-password", wantStatus: 200, wantVault: 2, reason: "unavailable"},
		{name: "503 on a PUT is not retried", proc: "default", failStatus: 503, failN: 1, retryAfter: "0",
			method: "PUT", path: "/secrets/unavailable-put", wantStatus: 503, wantVault: 1},
		{name: "500 is not retried", proc: "default", failStatus: 500, failN: 1, retryAfter: "0",
			method: "GET", path: "/secrets/db-password", wantStatus: 500, wantVault: 1},
		{name: "retries exhausted", proc: "retryMax1", failStatus: 429, failN: 5, retryAfter: "0",
			method: "GET", path: "/secrets/db-password", wantStatus: 429, wantVault: 2, reason: "throttled"},
		{name: "throttled name honours Retry-After", proc: "retryMax1",
			method: "GET", path: "/secrets/" + azfake.SecretThrottled, wantStatus: 429, wantVault: 2, reason: "throttled"},
	}
	retries := map[string]map[string]int{}
	retried := func(t *testing.T, p *proc) map[string]float64 {
		mfs := p.metricsOf(t)
		return map[string]float64{
			"throttled":   metric(mfs, "kvproxy_upstream_retries_total", map[string]string{"reason": "throttled"}),
			"unavailable": metric(mfs, "kvproxy_upstream_retries_total", map[string]string{"reason": "unavailable"}),
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := procs[tc.proc]
			before := retried(t, p)
			f.Vault.ResetRequests()
			if tc.failN > 0 {
				f.Vault.Faults.FailNext(tc.failStatus, tc.failN, tc.retryAfter)
				t.Cleanup(func() { f.Vault.Faults.FailNext(0, 0, "") })
			}
			h := md()
			var body *strings.Reader
			if tc.method == http.MethodPut {
				h.Set("Content-Type", "application/json")
				body = strings.NewReader(`{"value":"v-` + tc.name + `"}`)
			}
			start := time.Now()
			var r response
			if body != nil {
				r = p.do(t, tc.method, tc.path, h, body)
			} else {
				r = p.do(t, tc.method, tc.path, h, nil)
			}
			if r.Status != tc.wantStatus {
				t.Errorf("status %d, want %d; body %s", r.Status, tc.wantStatus, r.Body)
			}
			reqs := tokenRequests(f.Vault)
			if len(reqs) != tc.wantVault {
				t.Errorf("the vault received %d requests, want %d", len(reqs), tc.wantVault)
			}
			for _, rq := range reqs {
				if rq.Method != tc.method || rq.Path != tc.path {
					t.Errorf("the vault received %s %s", rq.Method, rq.Path)
				}
				if tc.method == http.MethodPut && string(rq.Body) != `{"value":"v-`+tc.name+`"}` {
					t.Errorf("attempt carried body %q; a retry must resend the whole body", rq.Body)
				}
			}
			if tc.path == "/secrets/"+azfake.SecretThrottled {
				if took := time.Since(start); took < 900*time.Millisecond {
					t.Errorf("answered after %v; Retry-After: 1 was not honoured", took)
				}
				if r.Header.Get("Retry-After") != "1" {
					t.Errorf("the vault's Retry-After did not reach the client: %q", r.Header.Get("Retry-After"))
				}
			}
			if r.Status == http.StatusTooManyRequests {
				// Passed on after the retries: explained, with the retries counted.
				e := decodeError(t, r)
				if r.Header.Get("X-Kvproxy-Diagnosis") != "vault-throttled" || e.Kvproxy == nil ||
					!strings.Contains(e.Kvproxy.Detail, "KVPROXY_CACHE_TTL") || !strings.Contains(e.Kvproxy.Detail, "once more") {
					t.Errorf("a 429 passed on: diagnosis %q, body %s", r.Header.Get("X-Kvproxy-Diagnosis"), r.Body)
				}
			}
			after := retried(t, p)
			for reason := range after {
				want := 0
				if reason == tc.reason {
					want = tc.wantVault - 1
				}
				if got := after[reason] - before[reason]; got != float64(want) {
					t.Errorf("kvproxy_upstream_retries_total{reason=%q} rose by %v, want %d", reason, got, want)
				}
			}
			if tc.reason != "" {
				if retries[tc.proc] == nil {
					retries[tc.proc] = map[string]int{}
				}
				retries[tc.proc][tc.reason] += tc.wantVault - 1
			}
		})
	}
	t.Run("retries are counted", func(t *testing.T) {
		for name, p := range procs {
			mfs := p.metricsOf(t)
			for _, reason := range []string{"throttled", "unavailable"} {
				if got, want := metric(mfs, "kvproxy_upstream_retries_total", map[string]string{"reason": reason}), retries[name][reason]; got != float64(want) {
					t.Errorf("%s: kvproxy_upstream_retries_total{reason=%q} = %v, want %d", name, reason, got, want)
				}
			}
		}
	})
}
