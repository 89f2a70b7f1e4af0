package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// TestColdCacheOneTokenFetch: 200 concurrent requests on a cold cache cause
// exactly one request to the identity endpoint.
func TestColdCacheOneTokenFetch(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	release := f.IDs.Faults.Hold() // the start-up fetch blocks at the endpoint
	t.Cleanup(release)
	p := startKV(t, f, nil)
	azfaketest.Eventually(t, 20*time.Second, "the start-up token request to reach the endpoint", func() (bool, string) {
		return f.IDs.Faults.Waiting() == 1, fmt.Sprintf("waiting=%d", f.IDs.Faults.Waiting())
	})

	const n = 200
	ok := coldReads(t, p, n, 30*time.Second, func() {
		if got, w := f.IDs.Requests(), f.IDs.Faults.Waiting(); got != 1 || w != 1 {
			t.Errorf("with %d requests waiting, the identity endpoint has %d requests (%d held), want 1", n, got, w)
		}
		if reqs := tokenRequests(f.Vault); len(reqs) != 0 {
			t.Errorf("the vault received %d requests with a token before any token was issued", len(reqs))
		}
	}, release)
	if got := f.IDs.Requests(); got != 1 {
		t.Errorf("the identity endpoint received %d token requests, want 1", got)
	}
	reqs := tokenRequests(f.Vault)
	if len(reqs) != ok {
		t.Fatalf("the vault received %d requests, want %d (the reads answered 200)", len(reqs), ok)
	}
	for _, r := range reqs {
		if r.Token != reqs[0].Token {
			t.Fatal("the vault received more than one distinct token")
		}
	}
}

// coldReads sends n concurrent reads of db-password to p while the identity
// endpoint holds kvproxy's first token request, waits up to d until every
// read has reached kvproxy, calls whileHeld and then release, and waits for
// the answers. A read waits at most 3s for a token, so on a slow machine
// the first reads may be answered 503 token-unavailable before the release;
// every answer must be that or the secret. It returns how many got the
// secret.
func coldReads(t *testing.T, p *proc, n int, d time.Duration, whileHeld, release func()) (ok int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: n}, Timeout: 60 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	answers := make([]response, n)
	errs := make([]error, n)
	var answered atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, p.proxyURL("/secrets/db-password"), nil)
			req.Header.Set("Metadata", "true")
			answers[i], errs[i] = doRequest(client, req)
			answered.Add(1)
		})
	}
	// Every read has reached kvproxy: answered, or in flight there. A read
	// leaves kvproxy's gauge before its client has the answer, so counting
	// the answers first never counts a read twice.
	azfaketest.Eventually(t, d, fmt.Sprintf("%d reads to reach kvproxy", n), func() (bool, string) {
		a := answered.Load()
		v := metric(p.metricsOf(t), "kvproxy_inflight_requests", nil)
		return int(a)+int(v) == n, fmt.Sprintf("%d answered, kvproxy_inflight_requests=%v", a, v)
	})
	whileHeld()
	release()
	wg.Wait()
	unavailable := 0
	for i := range n {
		switch r := answers[i]; {
		case errs[i] != nil:
			t.Fatalf("read %d: %v", i, errs[i])
		case r.Status == http.StatusOK:
			if v := decodeSecret(t, r).Value; v != seededValue {
				t.Fatalf("read %d: value %q", i, v)
			}
			ok++
		case r.Status == http.StatusServiceUnavailable && r.Header.Get("X-Kvproxy-Diagnosis") == "token-unavailable":
			unavailable++
		default:
			t.Fatalf("read %d: status %d, body %s", i, r.Status, r.Body)
		}
	}
	t.Logf("%d cold reads: %d got the secret, %d waited out the 3s for a token", n, ok, unavailable)
	return ok
}

// TestRefreshUnderLoad runs continuous load while tokens live 6 seconds:
// kvproxy must refresh ahead of expiry, never send an expired token, never
// fail a request, and fetch about once per half lifetime, not per request.
func TestRefreshUnderLoad(t *testing.T) {
	t.Parallel()
	const lifetime = 6 * time.Second
	// azidentity caches no token this short: every refresh reaches the endpoint.
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{Lifetime: lifetime})
	tv := startTimedVault(t, f)
	p := startKV(t, f, nil)
	p.waitReady(t, 20*time.Second)

	const (
		workers  = 8
		duration = 14 * time.Second
		maxTotal = 10_000_000 // a safety cap only: the load ends by time
	)
	var total, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) && total.Add(1) <= maxTotal {
				r, err := p.try(http.MethodGet, "/secrets/db-password", md(), nil)
				if err != nil || r.Status != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, error %v, body %s", r.Status, err, r.Body))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d requests in %v, %d token requests", min(total.Load(), maxTotal), elapsed.Round(time.Millisecond), f.IDs.Requests())

	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests failed; first: %v", n, firstErr.Load())
	}
	tv.mu.Lock()
	log := tv.log
	tv.mu.Unlock()
	tokens := map[string]bool{}
	expiredSent := 0
	for _, r := range log {
		if r.token == "" {
			continue
		}
		tokens[r.token] = true
		c, err := azfake.ParseToken(r.token)
		if err != nil {
			t.Fatalf("the vault received a token the fakes did not mint: %v", err)
		}
		if !c.ExpiresAt.After(r.at) || r.status == http.StatusUnauthorized {
			expiredSent++
			if expiredSent <= 3 {
				t.Errorf("a token expiring at %v reached the vault at %v (answered %d)", c.ExpiresAt, r.at, r.status)
			}
		}
	}
	if expiredSent > 0 {
		t.Errorf("%d requests reached the vault with an expired token", expiredSent)
	}
	if len(log) < 100 {
		t.Errorf("only %d requests reached the vault; the load did not run", len(log))
	}
	// Refreshes: one start-up fetch, then one per half lifetime (expires_on
	// is whole seconds, so a lifetime may be up to a second short).
	maxFetches := int(elapsed/(lifetime/2-500*time.Millisecond)) + 3
	if got := f.IDs.Requests(); got > maxFetches || got < 3 {
		t.Errorf("the identity endpoint received %d token requests in %v; want between 3 and %d (about one per %v)", got, elapsed.Round(time.Second), maxFetches, lifetime/2)
	}
	if len(tokens) < 3 {
		t.Errorf("the vault saw %d distinct tokens in %v with %v tokens; kvproxy did not refresh", len(tokens), elapsed.Round(time.Second), lifetime)
	}
	mfs := p.metricsOf(t)
	if v := metric(mfs, "kvproxy_token_acquisitions_total", map[string]string{"result": "error"}); v != 0 {
		t.Errorf("kvproxy_token_acquisitions_total{result=error} = %v, want 0", v)
	}
	exp := metric(mfs, "kvproxy_token_expiry_timestamp_seconds", nil)
	if until := time.Until(time.Unix(int64(exp), 0)); until <= 0 || until > lifetime {
		t.Errorf("kvproxy_token_expiry_timestamp_seconds = %v, %v from now; want a token expiring within %v", exp, until, lifetime)
	}
}

// TestExpiredTokenNeverSent: with 6-second tokens and the identity endpoint
// failing after the first one, kvproxy serves the token it holds while it
// is valid and then refuses with 503 token-unavailable: no request reaches
// the vault with an expired token. When the endpoint recovers, so does
// kvproxy.
func TestExpiredTokenNeverSent(t *testing.T) {
	t.Parallel()
	const lifetime = 6 * time.Second
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{Lifetime: lifetime})
	tv := startTimedVault(t, f)
	// A short deadline bounds how long a request waits for a fetch that
	// azcore keeps retrying.
	const upstreamTimeout = 2 * time.Second
	p := startKV(t, f, map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": upstreamTimeout.String()})
	p.waitReady(t, 20*time.Second)
	decodeSecret(t, p.get(t, "/secrets/db-password"))
	reqs := tokenRequests(f.Vault)
	if len(reqs) != 1 || reqs[0].Claims == nil {
		t.Fatalf("vault requests %+v", reqs)
	}
	exp := reqs[0].Claims.ExpiresAt
	f.IDs.Faults.SetDown(true)

	// Load until well past the moment a 503 is due: the token is unusable
	// at its expiry at the latest, and a request then waits at most the
	// upstream timeout for a fetch. The loop ends by time: how many
	// requests fit before then depends on the machine (and -race), so the
	// count is only a safety cap far above any rate seen.
	const workers, safetyCap = 4, 10_000_000
	stop := exp.Add(upstreamTimeout + 2*time.Second)
	var total atomic.Int64
	var mu sync.Mutex
	var lastOK time.Time
	var unavailable, other int
	var firstOther string
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) && total.Add(1) <= safetyCap {
				r, err := p.try(http.MethodGet, "/secrets/db-password", md(), nil)
				now := time.Now()
				mu.Lock()
				switch {
				case err == nil && r.Status == http.StatusOK:
					lastOK = now
				case err == nil && r.Status == http.StatusServiceUnavailable && r.Header.Get("X-Kvproxy-Diagnosis") == "token-unavailable":
					unavailable++
				default:
					other++
					if firstOther == "" {
						firstOther = fmt.Sprintf("status %d error %v body %s", r.Status, err, r.Body)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("token expired at %v; last 200 at %v; %d requests: %d answers 503 token-unavailable, %d other", exp.Format(time.StampMilli), lastOK.Format(time.StampMilli), min(total.Load(), safetyCap), unavailable, other)
	if total.Load() > safetyCap {
		t.Fatalf("the load stopped at its safety cap of %d requests before %v", safetyCap, stop.Format(time.StampMilli))
	}
	if other > 0 {
		t.Errorf("%d answers were neither 200 nor 503 token-unavailable; first: %s", other, firstOther)
	}
	if lastOK.After(exp) {
		t.Errorf("a request succeeded at %v, after the only token expired at %v", lastOK, exp)
	}
	if unavailable == 0 {
		t.Error("no request was refused after the token expired")
	}
	tv.mu.Lock()
	for _, r := range tv.log {
		if r.token == "" {
			continue
		}
		c, err := azfake.ParseToken(r.token)
		if err != nil || !c.ExpiresAt.After(r.at) || r.status == http.StatusUnauthorized {
			t.Errorf("a request reached the vault at %v with a token expiring at %v (answered %d)", r.at, c.ExpiresAt, r.status)
		}
	}
	tv.mu.Unlock()
	if rz, _ := p.adminGet("/readyz"); rz.Status != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d with an expired token", rz.Status)
	}

	f.IDs.Faults.SetDown(false)
	p.waitReady(t, 40*time.Second)
	decodeSecret(t, p.get(t, "/secrets/db-password"))
}

// TestIdentityEndpointDownAtStart: with the identity endpoint failing,
// kvproxy is alive but not ready and answers 503 token-unavailable without
// reaching the vault; once the endpoint recovers it becomes ready on its own.
func TestIdentityEndpointDownAtStart(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	f.IDs.Faults.SetDown(true)
	p := startKV(t, f, nil)

	if r, err := p.adminGet("/healthz"); err != nil || r.Status != http.StatusOK {
		t.Errorf("/healthz: %d %v, want 200", r.Status, err)
	}
	r, err := p.adminGet("/readyz")
	if err != nil || r.Status != http.StatusServiceUnavailable {
		t.Errorf("/readyz: %d %v %s, want 503", r.Status, err, r.Body)
	}
	if v := metric(p.metricsOf(t), "kvproxy_ready", nil); v != 0 {
		t.Errorf("kvproxy_ready = %v while no token is held", v)
	}

	// The first fetch is retried inside azcore for several seconds; a
	// request waits for it at most 3s, and once the fetch has failed,
	// requests get its outcome at once.
	start := time.Now()
	resp := p.get(t, "/secrets/db-password")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the first request was answered after %v; a request waits at most 3s for a token", took)
	}
	checkRefusal(t, resp, http.StatusServiceUnavailable, "token-unavailable")
	var e kvError
	azfaketest.Eventually(t, 30*time.Second, "a 503 naming the endpoint's 500", func() (bool, string) {
		resp = p.get(t, "/secrets/db-password")
		e = decodeError(t, resp)
		if e.Kvproxy == nil {
			return false, string(resp.Body)
		}
		d := e.Kvproxy.Detail
		return strings.Contains(d, "500") && strings.Contains(d, f.IDURL), d
	})
	checkRefusal(t, resp, http.StatusServiceUnavailable, "token-unavailable")
	if e.Error.Code != "TokenUnavailable" {
		t.Errorf("error.code %q, want TokenUnavailable", e.Error.Code)
	}
	t.Logf("detail: %s", e.Kvproxy.Detail)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if reqs := f.Vault.Requests(); len(reqs) != 0 {
		t.Errorf("the vault received %d requests while no token was held", len(reqs))
	}
	rz, _ := p.adminGet("/readyz")
	var ready map[string]string
	_ = json.Unmarshal(rz.Body, &ready)
	if rz.Status != http.StatusServiceUnavailable || ready["diagnosis"] != "token-unavailable" || ready["reason"] == "" {
		t.Errorf("/readyz after a failed fetch: %d %s; want 503 naming token-unavailable and the reason", rz.Status, rz.Body)
	}
	if f.IDs.Requests() < 2 {
		t.Errorf("the identity endpoint saw %d requests; the failing fetch was not retried", f.IDs.Requests())
	}

	f.IDs.Faults.SetDown(false)
	p.waitReady(t, 40*time.Second)
	decodeSecret(t, p.get(t, "/secrets/db-password"))
	mfs := p.metricsOf(t)
	if v := metric(mfs, "kvproxy_token_acquisitions_total", map[string]string{"result": "error"}); v < 1 {
		t.Errorf("kvproxy_token_acquisitions_total{result=error} = %v, want > 0", v)
	}
	if v := metric(mfs, "kvproxy_token_acquisitions_total", map[string]string{"result": "success"}); v < 1 {
		t.Errorf("kvproxy_token_acquisitions_total{result=success} = %v, want >= 1", v)
	}
	if v := metric(mfs, "kvproxy_ready", nil); v != 1 {
		t.Errorf("kvproxy_ready = %v after recovery", v)
	}
}

// TestIdentityOutageFailsFast: the README promises that while no valid
// token exists "a request starts at most one new fetch per second; the
// others get 503 token-unavailable at once". Once the outage is known,
// bursts of requests must be refused at once (one request per burst may
// wait for the fetch it starts), whatever a fetch in flight is doing.
func TestIdentityOutageFailsFast(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	f.IDs.Faults.SetDown(true)
	// The deadline bounds how long a request that does wait can take.
	p := startKV(t, f, map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "3s"})
	azfaketest.Eventually(t, 40*time.Second, "/readyz to report the failed fetch", func() (bool, string) {
		r, err := p.adminGet("/readyz")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(string(r.Body), "token-unavailable"), string(r.Body)
	})

	const burst, slow = 10, 1500 * time.Millisecond
	var problems []string
	start := time.Now()
	for round := 0; time.Since(start) < 4*time.Second && round < 20; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		waited := 0
		for range burst {
			wg.Go(func() {
				s := time.Now()
				r, err := p.try(http.MethodGet, "/secrets/db-password", md(), nil)
				took := time.Since(s)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || r.Status != http.StatusServiceUnavailable || r.Header.Get("X-Kvproxy-Diagnosis") != "token-unavailable" {
					problems = append(problems, fmt.Sprintf("round %d: status %d error %v", round, r.Status, err))
				}
				if took > slow {
					waited++
				}
			})
		}
		wg.Wait()
		if waited > 1 {
			problems = append(problems, fmt.Sprintf("at %.1fs: %d of %d requests waited more than %v for a 503",
				time.Since(start).Seconds(), waited, burst, slow))
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if n := len(f.Vault.Requests()); n != 0 {
		t.Errorf("the vault received %d requests during the outage", n)
	}
}

// TestWorkloadIdentity gets tokens from the Entra stand-in with a federated
// token file, selected explicitly or by auto.
func TestWorkloadIdentity(t *testing.T) {
	t.Parallel()
	const clientID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	const objectID = "99999999-8888-7777-6666-555555555555"
	const federated = "federated-service-account-token"

	for _, tc := range []struct {
		name       string
		credential string
	}{
		{name: "explicit", credential: "workload-identity"},
		{name: "auto", credential: "auto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
			entra := azfaketest.StartEntra(t, f.TLS, azfake.EntraOptions{Identity: azfake.Identity{ObjectID: objectID, AppID: clientID}, FederatedToken: federated})
			tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
			if err := os.WriteFile(tokenFile, []byte(federated), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startKV(t, f, workloadEnv(tc.credential, entra.Authority, clientID, tokenFile))
			p.waitReady(t, 20*time.Second)
			decodeSecret(t, p.get(t, "/secrets/db-password"))
			reqs := tokenRequests(f.Vault)
			if len(reqs) != 1 || reqs[0].Claims == nil {
				t.Fatalf("vault requests %+v, want one with a token minted by the fakes", reqs)
			}
			if c := reqs[0].Claims; c.AppID != clientID || c.ObjectID != objectID || c.Audience != "https://vault.azure.net" || c.TenantID != azfake.DefaultTenantID {
				t.Errorf("token appid=%s oid=%s aud=%s tid=%s; want the workload identity %s for https://vault.azure.net", c.AppID, c.ObjectID, c.Audience, c.TenantID, clientID)
			}
			if n := entra.Requests(); n != 1 {
				t.Errorf("Entra's token endpoint received %d requests, want 1", n)
			}
			if n := f.IDs.Requests(); n != 0 {
				t.Errorf("the managed identity endpoint received %d requests under workload identity", n)
			}
			if l := p.waitLog(t, func(l logLine) bool { return l.Msg() == "kvproxy started" }, time.Second, "start-up"); l.Str("credential") != "workload-identity" {
				t.Errorf("start-up line names credential %q", l.Str("credential"))
			}
		})
	}

	t.Run("missing federated token file", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		entra := azfaketest.StartEntra(t, f.TLS, azfake.EntraOptions{Identity: azfake.Identity{ObjectID: objectID, AppID: clientID}, FederatedToken: federated})
		tokenFile := filepath.Join(t.TempDir(), "not-yet", "azure-identity-token")
		p := startKV(t, f, workloadEnv("workload-identity", entra.Authority, clientID, tokenFile))

		r := p.get(t, "/secrets/db-password")
		e := checkRefusal(t, r, http.StatusServiceUnavailable, "token-unavailable")
		t.Logf("detail: %s", e.Kvproxy.Detail)
		if d := strings.ToLower(e.Kvproxy.Detail); !strings.Contains(d, "federated token file") {
			t.Errorf("detail %q does not mention the federated token file", e.Kvproxy.Detail)
		}
		if reqs := f.Vault.Requests(); len(reqs) != 0 {
			t.Errorf("the vault received %d requests", len(reqs))
		}
		if n := entra.Requests(); n != 0 {
			t.Errorf("Entra received %d token requests without an assertion", n)
		}
		if rz, _ := p.adminGet("/readyz"); rz.Status != http.StatusServiceUnavailable {
			t.Errorf("/readyz %d without a token", rz.Status)
		}

		// The file appears (the pod's projected volume is mounted late):
		// kvproxy keeps trying and recovers without a restart.
		if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(federated), 0o600); err != nil {
			t.Fatal(err)
		}
		p.waitReady(t, 40*time.Second)
		decodeSecret(t, p.get(t, "/secrets/db-password"))
	})
}
