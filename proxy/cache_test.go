package proxy

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/secretcache"
)

func cachedSetup(t *testing.T, ttl time.Duration) *env {
	t.Helper()
	return setup(t, func(o *Options) {
		o.Cache = secretcache.New(secretcache.Options{TTL: ttl, StaleIfError: time.Hour, MaxBytes: 1 << 20})
	})
}

func TestCacheOffByDefault(t *testing.T) {
	e := setup(t, nil)
	for range 3 {
		resp, _ := e.do(t, "GET", "/secrets/db-password", nil)
		if resp.Header.Get(HeaderCache) != "" {
			t.Fatalf("X-Cache %q with the cache off", resp.Header.Get(HeaderCache))
		}
	}
	if n := len(e.vault.Requests()); n != 3 {
		t.Fatalf("3 reads made %d vault reads", n)
	}
}

func TestCacheMissThenHit(t *testing.T) {
	e := cachedSetup(t, time.Hour)
	resp, body := e.do(t, "GET", "/secrets/db-password", nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderCache) != "MISS" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("first read: %d %q %q %s", resp.StatusCode, resp.Header.Get(HeaderCache), resp.Header.Get("Content-Type"), body)
	}
	resp, body2 := e.do(t, "GET", "/secrets/db-password?api-version=7.5", nil) // the default api-version: the same key
	if resp.Header.Get(HeaderCache) != "HIT" || resp.Header.Get("Age") == "" || string(body2) != string(body) ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("second read: %q Age %q %q", resp.Header.Get(HeaderCache), resp.Header.Get("Age"), resp.Header.Get("Content-Type"))
	}
	if n := len(e.vault.Requests()); n != 1 {
		t.Fatalf("two reads made %d vault reads, want 1", n)
	}
	// Lists are never cached.
	e.do(t, "GET", "/secrets", nil)
	e.do(t, "GET", "/secrets", nil)
	if n := len(e.vault.Requests()); n != 3 {
		t.Fatalf("lists were cached (%d vault reads)", n)
	}
}

func TestCacheCoalescesColdReads(t *testing.T) {
	e := cachedSetup(t, time.Hour)
	e.faults.SetLatency(300 * time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for range 200 {
		wg.Go(func() {
			resp, _ := e.do(t, "GET", "/secrets/db-password", nil)
			if resp.StatusCode != 200 {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if bad != 0 {
		t.Fatalf("%d of 200 reads failed", bad)
	}
	if n := len(e.vault.Requests()); n != 1 {
		t.Fatalf("200 concurrent cold reads made %d vault reads, want 1", n)
	}
}

func TestCacheInvalidationAndClientControl(t *testing.T) {
	e := cachedSetup(t, time.Hour)
	e.do(t, "PUT", "/secrets/rotating", strings.NewReader(`{"value":"v1"}`), "Content-Type", "application/json")
	if _, b := e.do(t, "GET", "/secrets/rotating", nil); !strings.Contains(string(b), `"v1"`) {
		t.Fatalf("read: %s", b)
	}
	e.do(t, "PUT", "/secrets/rotating", strings.NewReader(`{"value":"v2"}`), "Content-Type", "application/json")
	if resp, b := e.do(t, "GET", "/secrets/rotating", nil); !strings.Contains(string(b), `"v2"`) || resp.Header.Get(HeaderCache) != "MISS" {
		t.Fatalf("a PUT through kvproxy is not visible on the next read: %q %s", resp.Header.Get(HeaderCache), b)
	}
	before := len(e.vault.Requests())
	for _, cc := range []string{"no-store", "no-cache"} {
		if resp, _ := e.do(t, "GET", "/secrets/rotating", nil, "Cache-Control", cc); resp.Header.Get(HeaderCache) != "BYPASS" {
			t.Errorf("Cache-Control: %s answered X-Cache %q", cc, resp.Header.Get(HeaderCache))
		}
	}
	if n := len(e.vault.Requests()) - before; n != 2 {
		t.Errorf("no-store and no-cache made %d vault reads, want 2", n)
	}
}

func TestCacheStaleIfErrorNeverServesARefusedSecret(t *testing.T) {
	e := cachedSetup(t, 200*time.Millisecond)
	e.do(t, "GET", "/secrets/db-password", nil)
	e.do(t, "GET", "/secrets/api-key", nil)
	time.Sleep(300 * time.Millisecond) // past the TTL: only older, never younger, on a slow machine
	e.faults.FailNext(503, 1000, "")
	resp, body := e.do(t, "GET", "/secrets/db-password", nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderCache) != "STALE" || resp.Header.Get("Age") == "" ||
		resp.Header.Get(HeaderDiagnosis) != diagnose.UpstreamUnavailable || !strings.Contains(string(body), "correct-horse") {
		t.Fatalf("vault down past the TTL: %d %q Age %q %q", resp.StatusCode, resp.Header.Get(HeaderCache), resp.Header.Get("Age"), resp.Header.Get(HeaderDiagnosis))
	}
	// The vault refuses api-key once: it is dropped, and not served stale
	// while the vault is down again.
	e.faults.FailNext(403, 1, "")
	if resp, _ := e.do(t, "GET", "/secrets/api-key", nil, "Cache-Control", "no-cache"); resp.StatusCode != 403 {
		t.Fatalf("refusal: %d", resp.StatusCode)
	}
	e.faults.FailNext(503, 1000, "")
	if resp, _ := e.do(t, "GET", "/secrets/api-key", nil); resp.StatusCode == 200 {
		t.Fatalf("a secret the vault refused was served from cache (%q)", resp.Header.Get(HeaderCache))
	}
}

// Refreshes ahead of the TTL run after the read that started them was
// answered, while fasthttp reuses that read's request for the next one on
// the connection: under -race this catches a fetch reading a reused request.
// Reads keep being answered from memory, and the vault sees about one read
// per refresh period.
func TestCacheRefreshAheadUnderLoad(t *testing.T) {
	e := cachedSetup(t, 400*time.Millisecond)
	deadline := time.Now().Add(2 * time.Second)
	reads := 0
	for n := 0; time.Now().Before(deadline) && n < 100000; n++ {
		resp, body := e.do(t, "GET", "/secrets/db-password", nil, "x-ms-client-request-id", "r-"+strings.Repeat("x", n%7))
		if resp.StatusCode != 200 || !strings.Contains(string(body), "correct-horse") {
			t.Fatalf("read %d: %d %s", n, resp.StatusCode, body)
		}
		reads++
	}
	vault := len(e.vault.Requests())
	if vault < 2 || vault > 12 {
		t.Errorf("%d reads in 2s made %d vault reads; want a refresh per 320ms or so", reads, vault)
	}
	for _, r := range e.vault.Requests() {
		if r.Path != "/secrets/db-password" || r.RawQuery != "api-version=7.5" {
			t.Errorf("a refresh sent %s?%s", r.Path, r.RawQuery)
		}
	}
}

// BenchmarkProxyCachedHit measures a read answered from the secret cache:
// policy, the cache lookup, the answer and metrics, no upstream.
func BenchmarkProxyCachedHit(b *testing.B) {
	p, req := inMemoryProxy(b, Options{Cache: secretcache.New(secretcache.Options{TTL: time.Hour})})
	var ctx fasthttp.RequestCtx
	ctx.Init(req, nil, nil)
	p.serve(&ctx, true) // the miss
	b.ReportAllocs()
	for b.Loop() {
		ctx.Init(req, nil, nil)
		p.serve(&ctx, true)
		if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek(HeaderCache)) != "HIT" {
			b.Fatal(ctx.Response.StatusCode(), string(ctx.Response.Header.Peek(HeaderCache)))
		}
	}
}
