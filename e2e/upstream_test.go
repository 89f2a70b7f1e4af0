package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// TestUpstreamFailures: when the vault or the identity endpoint cannot
// answer, the client gets kvproxy's JSON error with the right status and
// diagnosis, promptly, and kvproxy stays healthy.
func TestUpstreamFailures(t *testing.T) {
	t.Parallel()

	t.Run("vault unreachable", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, nil)
		p.waitReady(t, 20*time.Second)
		_ = f.Vault.Close()
		r := p.get(t, "/secrets/db-password")
		e := checkRefusal(t, r, http.StatusBadGateway, "upstream-unavailable")
		if strings.Contains(string(r.Body), "db-password") {
			t.Errorf("the error echoes the client's path: %s", r.Body)
		}
		if !strings.Contains(e.Kvproxy.Detail, "refused") {
			t.Errorf("detail %q does not say the connection was refused", e.Kvproxy.Detail)
		}
	})

	t.Run("vault too slow", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "1s"})
		p.waitReady(t, 20*time.Second)
		f.Vault.Faults.SetLatency(5 * time.Second)
		start := time.Now()
		r := p.get(t, "/secrets/db-password?api-version=7.5")
		took := time.Since(start)
		checkRefusal(t, r, http.StatusGatewayTimeout, "upstream-unavailable")
		if took > 3*time.Second {
			t.Errorf("answered after %v with KVPROXY_UPSTREAM_TIMEOUT=1s", took)
		}
		if strings.Contains(string(r.Body), "db-password") || strings.Contains(string(r.Body), "api-version") {
			t.Errorf("the error echoes the client's path or query: %s", r.Body)
		}
	})

	t.Run("Retry-After beyond the deadline", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "2s"})
		p.waitReady(t, 20*time.Second)
		f.Vault.Faults.FailNext(http.StatusTooManyRequests, 1, "5")
		start := time.Now()
		r := p.get(t, "/secrets/db-password")
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("waited %v for a retry the 2s deadline could not fit", took)
		}
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "5" {
			t.Errorf("status %d Retry-After %q, want the vault's 429 with Retry-After: 5", r.Status, r.Header.Get("Retry-After"))
		}
		if n := len(tokenRequests(f.Vault)); n != 1 {
			t.Errorf("the vault received %d requests, want 1", n)
		}
	})

	t.Run("vault certificate not trusted", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		// Without SSL_CERT_FILE the fakes' CA is unknown to kvproxy.
		p := startKV(t, f, map[string]string{"SSL_CERT_FILE": ""})
		p.waitReady(t, 20*time.Second)
		r := p.get(t, "/secrets/db-password")
		e := checkRefusal(t, r, http.StatusBadGateway, "upstream-unavailable")
		if !strings.Contains(e.Kvproxy.Detail, "certificate") {
			t.Errorf("detail %q does not name the certificate problem", e.Kvproxy.Detail)
		}
		if n := len(f.Vault.Requests()); n != 0 {
			t.Errorf("the vault recorded %d requests over an untrusted connection", n)
		}
	})

	t.Run("identity endpoint hangs", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		release := f.IDs.Faults.Hold()
		t.Cleanup(release)
		p := startKV(t, f, map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "1s"})
		start := time.Now()
		r := p.get(t, "/secrets/db-password")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("answered after %v with KVPROXY_UPSTREAM_TIMEOUT=1s", took)
		}
		e := checkRefusal(t, r, http.StatusServiceUnavailable, "token-unavailable")
		if !strings.Contains(e.Kvproxy.Detail, "identity endpoint") {
			t.Errorf("detail %q does not point at the identity endpoint", e.Kvproxy.Detail)
		}
		if n := len(f.Vault.Requests()); n != 0 {
			t.Errorf("the vault received %d requests", n)
		}
		release()
		p.waitReady(t, 40*time.Second)
		decodeSecret(t, p.get(t, "/secrets/db-password"))
	})

	// A client that gives up does not cancel the request to the vault (the
	// HTTP engine cannot see it go); the request ends when the vault
	// answers, within KVPROXY_UPSTREAM_TIMEOUT, and nothing is left behind.
	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, nil)
		p.waitReady(t, 20*time.Second)
		f.Vault.Faults.SetLatency(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.proxyURL("/secrets/db-password"), nil)
		req.Header.Set("Metadata", "true")
		if _, err := doRequest(p.client, req); err == nil {
			t.Fatal("the request outlived its context")
		}
		azfaketest.Eventually(t, 15*time.Second, "kvproxy_inflight_requests to return to 0", func() (bool, string) {
			v := metric(p.metricsOf(t), "kvproxy_inflight_requests", nil)
			return v == 0, fmt.Sprint("kvproxy_inflight_requests ", v)
		})
		f.Vault.Faults.SetLatency(0)
		decodeSecret(t, p.get(t, "/secrets/db-password"))
	})
}
