package e2e

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// TestSecretCache checks the cache's contract from outside: off by
// default, MISS then HIT with Age and one vault read, 200 concurrent cold
// reads of a slow secret making one vault read, a PUT visible on the next
// read, no-store reaching the vault, STALE while the vault is down, and
// nothing served after the vault refused it.
func TestSecretCache(t *testing.T) {
	t.Parallel()
	t.Run("off by default", func(t *testing.T) {
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, nil)
		p.waitReady(t, 20*time.Second)
		for range 3 {
			if r := p.get(t, "/secrets/db-password"); r.Status != 200 || r.Header.Get("X-Cache") != "" {
				t.Fatalf("%d X-Cache %q", r.Status, r.Header.Get("X-Cache"))
			}
		}
		if n := len(f.Vault.Requests()); n != 3 {
			t.Fatalf("3 reads made %d vault reads", n)
		}
	})
	t.Run("on", func(t *testing.T) {
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_CACHE_TTL": "1h"})
		p.waitReady(t, 20*time.Second)
		if r := p.get(t, "/secrets/db-password"); r.Header.Get("X-Cache") != "MISS" {
			t.Fatalf("first read X-Cache %q", r.Header.Get("X-Cache"))
		}
		r := p.get(t, "/secrets/db-password")
		if r.Header.Get("X-Cache") != "HIT" || r.Header.Get("Age") == "" || !strings.Contains(string(r.Body), "correct-horse") {
			t.Fatalf("second read X-Cache %q Age %q", r.Header.Get("X-Cache"), r.Header.Get("Age"))
		}
		if n := len(f.Vault.Requests()); n != 1 {
			t.Fatalf("two reads made %d vault reads", n)
		}
		// 200 concurrent cold reads of a slow secret: one vault read.
		f.Vault.Faults.SetLatency(500 * time.Millisecond)
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				if r, err := p.try("GET", "/secrets/api-key", md(), nil); err != nil || r.Status != 200 {
					t.Errorf("cold read: %v %d", err, r.Status)
				}
			})
		}
		wg.Wait()
		f.Vault.Faults.SetLatency(0)
		if n := len(f.Vault.Requests()); n != 2 {
			t.Fatalf("200 concurrent cold reads made %d vault reads, want 1", n-1)
		}
		// A PUT through kvproxy is visible on the next read.
		p.do(t, "PUT", "/secrets/db-password", http.Header{"Metadata": {"true"}, "Content-Type": {"application/json"}}, strings.NewReader(`{"value":"rotated"}`))
		if r := p.get(t, "/secrets/db-password"); !strings.Contains(string(r.Body), "rotated") {
			t.Fatalf("after a PUT: %s", r.Body)
		}
		// no-store reaches the vault.
		before := len(f.Vault.Requests())
		if r := p.do(t, "GET", "/secrets/db-password", http.Header{"Metadata": {"true"}, "Cache-Control": {"no-store"}}, nil); r.Header.Get("X-Cache") != "BYPASS" {
			t.Fatalf("no-store: X-Cache %q", r.Header.Get("X-Cache"))
		}
		if len(f.Vault.Requests()) != before+1 {
			t.Fatal("no-store did not reach the vault")
		}
	})
	t.Run("stale", func(t *testing.T) {
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_CACHE_TTL": "200ms", "KVPROXY_RETRY_MAX": "0"})
		p.waitReady(t, 20*time.Second)
		p.get(t, "/secrets/db-password")
		p.get(t, "/secrets/api-key")
		time.Sleep(300 * time.Millisecond) // past the TTL
		f.Vault.Faults.FailNext(503, 1000, "")
		r := p.get(t, "/secrets/db-password")
		if r.Status != 200 || r.Header.Get("X-Cache") != "STALE" || r.Header.Get("Age") == "" || r.Header.Get("X-Kvproxy-Diagnosis") != "upstream-unavailable" {
			t.Fatalf("vault down past the TTL: %d %q Age %q %q", r.Status, r.Header.Get("X-Cache"), r.Header.Get("Age"), r.Header.Get("X-Kvproxy-Diagnosis"))
		}
		f.Vault.Faults.FailNext(403, 1, "")
		if r := p.do(t, "GET", "/secrets/api-key", http.Header{"Metadata": {"true"}, "Cache-Control": {"no-cache"}}, nil); r.Status != 403 {
			t.Fatalf("refusal: %d", r.Status)
		}
		f.Vault.Faults.FailNext(503, 1000, "")
		if r := p.get(t, "/secrets/api-key"); r.Status == 200 {
			t.Fatalf("after a 403 the secret was served (%q) while the vault is down", r.Header.Get("X-Cache"))
		}
	})
}
