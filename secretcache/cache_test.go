package secretcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvproxy/kvproxy/diagnose"
)

// The timing tests run in testing/synctest bubbles: time.Now and timers
// are the bubble's fake clock, which moves only when every goroutine in
// the bubble is blocked, so time.Sleep advances it exactly.

const (
	key  = "/secrets/db-password?api-version=7.5"
	item = "secrets/db-password"
)

// vault is a hand-written stand-in for the proxy's upstream call.
type vault struct {
	mu     sync.Mutex
	status int
	body   string
	diag   string
	err    error
	gate   chan struct{} // when set, a fetch waits for it (or its ctx)
	calls  atomic.Int32
}

func newVault(body string) *vault { return &vault{status: 200, body: body} }

func (v *vault) set(status int, body string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.status, v.body, v.err, v.diag = status, body, nil, ""
}

func (v *vault) fail(status int, diag string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.status, v.body, v.diag, v.err = status, `{"error":{"code":"ServiceUnavailable"}}`, diag, err
}

func (v *vault) fetch(ctx context.Context) (Result, error) {
	v.calls.Add(1)
	v.mu.Lock()
	gate := v.gate
	v.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Result{Diagnosis: "upstream-unavailable"}, ctx.Err()
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return Result{Diagnosis: v.diag}, v.err
	}
	return Result{
		Status: v.status, Body: []byte(v.body), Diagnosis: v.diag,
		Header: []Field{{"Content-Type", "application/json; charset=utf-8"}, {"x-ms-request-id", "r-" + strconv.Itoa(int(v.calls.Load()))},
			{"X-Ms-Client-Request-Id", "the client's"}, {"Strict-Transport-Security", "max-age=31536000"}},
	}, nil
}

// counts is an Observer.
type counts struct {
	mu        sync.Mutex
	results   map[string]int
	evictions int
	entries   int
	bytes     int64
}

func newCounts() *counts { return &counts{results: map[string]int{}} }

func (c *counts) ObserveResult(r string) { c.mu.Lock(); c.results[r]++; c.mu.Unlock() }
func (c *counts) ObserveEviction()       { c.mu.Lock(); c.evictions++; c.mu.Unlock() }
func (c *counts) ObserveSize(n int, b int64) {
	c.mu.Lock()
	c.entries, c.bytes = n, b
	c.mu.Unlock()
}

func (c *counts) get(r string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.results[r] }

func get(t *testing.T, c *Cache, v *vault, mode Mode) Answer {
	t.Helper()
	a, _ := c.Get(t.Context(), key, item, mode, v.fetch)
	return a
}

func expect(t *testing.T, a Answer, out Outcome, status int, body string) {
	t.Helper()
	if a.Outcome != out || a.Status != status || string(a.Body) != body {
		t.Fatalf("got %s %d %q; want %s %d %q", a.Outcome, a.Status, a.Body, out, status, body)
	}
}

func TestOffCallsTheVaultEveryTime(t *testing.T) {
	for _, o := range []Options{{}, {TTL: -time.Second}} {
		c := New(o)
		if c != nil {
			t.Fatalf("New(%+v) is on", o)
		}
		v := newVault(`{"value":"s3cret"}`)
		for range 3 {
			a := get(t, c, v, Normal)
			expect(t, a, Off, 200, `{"value":"s3cret"}`)
			if a.Outcome.Header() != "" {
				t.Errorf("off answers X-Cache: %s", a.Outcome.Header())
			}
		}
		if n := v.calls.Load(); n != 3 {
			t.Errorf("3 reads, %d vault reads", n)
		}
		c.Invalidate(item) // nil-safe
		if n, b := c.Size(); n != 0 || b != 0 {
			t.Error("an off cache holds something")
		}
	}
}

func TestMissThenHitWithAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: time.Minute, Observer: obs})
		v := newVault(`{"value":"s3cret"}`)
		a := get(t, c, v, Normal)
		expect(t, a, Miss, 200, `{"value":"s3cret"}`)
		if a.Outcome.Header() != "MISS" {
			t.Errorf("X-Cache: %s", a.Outcome.Header())
		}
		time.Sleep(3 * time.Second)
		a = get(t, c, v, Normal)
		expect(t, a, Hit, 200, `{"value":"s3cret"}`)
		if a.Age != 3*time.Second || a.Outcome.Header() != "HIT" {
			t.Errorf("Age %s, X-Cache %s", a.Age, a.Outcome.Header())
		}
		if n := v.calls.Load(); n != 1 {
			t.Errorf("%d vault reads", n)
		}
		// A HIT replays the allowlisted headers only, canonically named.
		want := []Field{{"Content-Type", "application/json; charset=utf-8"}, {"X-Ms-Request-Id", "r-1"}}
		if fmt.Sprint(a.Header) != fmt.Sprint(want) {
			t.Errorf("headers %v; want %v", a.Header, want)
		}
		if obs.get("miss") != 1 || obs.get("hit") != 1 || obs.entries != 1 || obs.bytes != int64(len(`{"value":"s3cret"}`)) {
			t.Errorf("observed %+v", obs)
		}
	})
}

func TestConcurrentColdReadsMakeOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: time.Minute, Observer: obs})
		v := newVault(`{"value":"s3cret"}`)
		v.gate = make(chan struct{})
		const readers = 200
		answers := make(chan Answer, readers)
		for range readers {
			go func() { answers <- get(t, c, v, Normal) }()
		}
		synctest.Wait() // every reader waits; the one fetch is held at the gate
		if n := v.calls.Load(); n != 1 {
			t.Fatalf("%d fetches for %d cold reads", n, readers)
		}
		close(v.gate)
		miss := 0
		for range readers {
			a := <-answers
			if a.Status != 200 || string(a.Body) != `{"value":"s3cret"}` || a.Outcome.Header() != "MISS" {
				t.Fatalf("got %s", a)
			}
			if a.Outcome == Miss {
				miss++
			}
		}
		if miss != 1 || obs.get("miss") != 1 || obs.get("coalesced") != readers-1 {
			t.Errorf("%d misses; observed %v", miss, obs.results)
		}
	})
}

func TestASharedFetchOutlivesTheReaderThatStartedIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute, FetchTimeout: 10 * time.Second})
		v := newVault(`{"value":"s3cret"}`)
		v.gate = make(chan struct{})
		first, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, err := c.Get(first, key, item, Normal, v.fetch); errc <- err }()
		synctest.Wait()
		second := make(chan Answer, 1)
		go func() { second <- get(t, c, v, Normal) }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("the first reader got %v", err)
		}
		close(v.gate)
		expect(t, <-second, Coalesced, 200, `{"value":"s3cret"}`)
		if n := v.calls.Load(); n != 1 {
			t.Errorf("%d fetches", n)
		}
	})
}

func TestASharedFetchIsBoundedByFetchTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute, FetchTimeout: 10 * time.Second})
		v := newVault(`{"value":"s3cret"}`)
		v.gate = make(chan struct{}) // never opened: the vault hangs
		start := time.Now()
		_, err := c.Get(t.Context(), key, item, Normal, v.fetch)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 10*time.Second {
			t.Errorf("after %s: %v", time.Since(start), err)
		}
	})
}

func TestRefreshAheadMakesNoReaderWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: 10 * time.Minute, RefreshAhead: 0.2, Observer: obs})
		v := newVault(`{"value":"v1"}`)
		get(t, c, v, Normal)
		time.Sleep(7 * time.Minute) // before the last 20%: no refresh
		expect(t, get(t, c, v, Normal), Hit, 200, `{"value":"v1"}`)
		synctest.Wait()
		if n := v.calls.Load(); n != 1 {
			t.Fatalf("%d fetches before the refresh window", n)
		}
		time.Sleep(90 * time.Second) // 8m30s: in the window
		v.set(200, `{"value":"v2"}`)
		v.gate = make(chan struct{})
		for range 5 {
			a := get(t, c, v, Normal) // returns though the refresh is held at the gate
			expect(t, a, Hit, 200, `{"value":"v1"}`)
		}
		synctest.Wait()
		if n := v.calls.Load(); n != 2 {
			t.Fatalf("%d fetches; want one background refresh", n)
		}
		close(v.gate)
		synctest.Wait()
		a := get(t, c, v, Normal)
		expect(t, a, Hit, 200, `{"value":"v2"}`)
		if a.Age != 0 {
			t.Errorf("Age %s after the refresh", a.Age)
		}
		if obs.get("hit") != 7 || obs.get("miss") != 1 {
			t.Errorf("observed %v", obs.results)
		}
	})
}

// Peek answers what Get would answer a Hit without starting anything, and
// nothing else: not an empty cache, not an entry due for its refresh
// ahead, past its TTL, invalidated or past its attributes.exp.
func TestPeekAnswersOnlyAHitThatStartsNothing(t *testing.T) {
	if _, ok := (*Cache)(nil).Peek(key); ok {
		t.Fatal("a cache that is off answered a Peek")
	}
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: 10 * time.Minute, RefreshAhead: 0.2, Observer: obs})
		v := newVault(`{"value":"v1"}`)
		if _, ok := c.Peek(key); ok {
			t.Fatal("an empty cache answered a Peek")
		}
		get(t, c, v, Normal)
		time.Sleep(7 * time.Minute)
		a, ok := c.Peek(key)
		if !ok {
			t.Fatal("no Peek of a fresh entry")
		}
		expect(t, a, Hit, 200, `{"value":"v1"}`)
		if a.Age != 7*time.Minute || a.Background {
			t.Errorf("Age %s, Background %v", a.Age, a.Background)
		}
		time.Sleep(90 * time.Second) // in the refresh-ahead window: Get's to start it
		if _, ok := c.Peek(key); ok {
			t.Fatal("a Peek answered an entry due for its refresh")
		}
		synctest.Wait()
		if n := v.calls.Load(); n != 1 {
			t.Fatalf("%d fetches: a Peek started one", n)
		}
		v.set(200, `{"value":"v2"}`)
		get(t, c, v, Normal) // the refresh, in the background
		synctest.Wait()
		if a, ok := c.Peek(key); !ok || string(a.Body) != `{"value":"v2"}` {
			t.Fatalf("Peek after the refresh: %v %s", ok, a.Body)
		}
		time.Sleep(11 * time.Minute) // past the TTL, inside stale-if-error
		if _, ok := c.Peek(key); ok {
			t.Fatal("a Peek answered an entry past its TTL")
		}
		get(t, c, v, Normal)
		c.Invalidate(item)
		if _, ok := c.Peek(key); ok {
			t.Fatal("a Peek answered an invalidated entry")
		}
		v.set(200, fmt.Sprintf(`{"value":"s","attributes":{"enabled":true,"exp":%d}}`, time.Now().Unix()+60))
		get(t, c, v, Normal)
		if _, ok := c.Peek(key); !ok {
			t.Fatal("no Peek of an entry before its exp")
		}
		time.Sleep(61 * time.Second)
		if _, ok := c.Peek(key); ok {
			t.Fatal("a Peek answered an entry past its attributes.exp")
		}
		// A hit per Peek answered (3) and the Get that started the refresh.
		if got, want := obs.get("hit"), 4; got != want {
			t.Errorf("%d hits counted, want %d: %v", got, want, obs.results)
		}
	})
}

func TestStaleIfError(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		diag     string
		err      error
		wantDiag string
	}{
		{"503 after retries", 503, "upstream-unavailable", nil, "upstream-unavailable"},
		{"429 after retries", 429, "upstream-unavailable", nil, "upstream-unavailable"},
		{"unreachable, no diagnosis given", 0, "", errors.New("dial tcp: connection refused"), FallbackDiagnosis},
		{"no token", 0, "token-unavailable", errors.New("no token"), "token-unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				obs := newCounts()
				c := New(Options{TTL: time.Minute, StaleIfError: time.Hour, RetryAfterError: 10 * time.Second, Observer: obs})
				v := newVault(`{"value":"s3cret"}`)
				get(t, c, v, Normal)
				time.Sleep(2 * time.Minute)
				v.fail(tt.status, tt.diag, tt.err)

				a, err := c.Get(t.Context(), key, item, Normal, v.fetch)
				if err != nil {
					t.Fatal(err)
				}
				expect(t, a, Stale, 200, `{"value":"s3cret"}`)
				if a.Age != 2*time.Minute || a.Diagnosis != tt.wantDiag || a.Outcome.Header() != "STALE" {
					t.Errorf("Age %s, diagnosis %q, X-Cache %s", a.Age, a.Diagnosis, a.Outcome.Header())
				}
				// While the vault keeps failing, reads are answered at once,
				// and the vault is tried again at most every RetryAfterError.
				v.gate = make(chan struct{}) // a hanging vault: nobody may wait on it
				for range 3 {
					expect(t, get(t, c, v, Normal), Stale, 200, `{"value":"s3cret"}`)
				}
				synctest.Wait()
				if n := v.calls.Load(); n != 2 {
					t.Fatalf("%d fetches", n)
				}
				time.Sleep(10 * time.Second)
				expect(t, get(t, c, v, Normal), Stale, 200, `{"value":"s3cret"}`)
				synctest.Wait()
				if n := v.calls.Load(); n != 3 {
					t.Fatalf("%d fetches after RetryAfterError", n)
				}
				// The vault answers again: the background fetch stores it.
				v.set(200, `{"value":"new"}`)
				close(v.gate)
				synctest.Wait()
				expect(t, get(t, c, v, Normal), Hit, 200, `{"value":"new"}`)
				if obs.get("stale") != 5 {
					t.Errorf("observed %v", obs.results)
				}
			})
		})
	}
}

func TestNoStaleBeyondStaleIfError(t *testing.T) {
	for _, sie := range []time.Duration{0, time.Hour} {
		synctest.Test(t, func(t *testing.T) {
			c := New(Options{TTL: time.Minute, StaleIfError: sie})
			v := newVault(`{"value":"s3cret"}`)
			get(t, c, v, Normal)
			time.Sleep(time.Minute + sie)
			v.fail(503, "upstream-unavailable", nil)
			a := get(t, c, v, Normal)
			expect(t, a, Miss, 503, `{"error":{"code":"ServiceUnavailable"}}`)
			if n, _ := c.Size(); n != 0 {
				t.Errorf("%d entries past the stale window", n)
			}
		})
	}
}

func TestAFailingVaultWithinTheTTLIsNotStale(t *testing.T) {
	// A 401 that survives renewal, a 400: passed on, never covered.
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute, StaleIfError: time.Hour})
		v := newVault(`{"value":"s3cret"}`)
		get(t, c, v, Normal)
		time.Sleep(2 * time.Minute)
		v.set(401, `{"error":{"code":"Unauthorized"}}`)
		expect(t, get(t, c, v, Normal), Miss, 401, `{"error":{"code":"Unauthorized"}}`)
	})
}

func TestRefusalDropsTheNameAndIsNeverServedStale(t *testing.T) {
	for _, status := range []int{403, 404} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := New(Options{TTL: time.Minute, StaleIfError: 24 * time.Hour})
				v := newVault(`{"value":"s3cret"}`)
				versioned := "/secrets/db-password/" + v32 + "?api-version=7.5"
				get(t, c, v, Normal)
				c.Get(t.Context(), versioned, item, Normal, v.fetch)
				c.Get(t.Context(), "/secrets/other?api-version=7.5", "secrets/other", Normal, v.fetch)
				time.Sleep(2 * time.Minute)
				v.set(status, `{"error":{"code":"Forbidden"}}`)
				expect(t, get(t, c, v, Normal), Miss, status, `{"error":{"code":"Forbidden"}}`)
				if n, _ := c.Size(); n != 1 {
					t.Errorf("%d entries; want the other secret's only", n)
				}
				// The vault goes down: the refused secret is not served stale,
				// under either key.
				v.fail(503, "upstream-unavailable", nil)
				for _, k := range []string{key, versioned} {
					a, _ := c.Get(t.Context(), k, item, Normal, v.fetch)
					expect(t, a, Miss, 503, `{"error":{"code":"ServiceUnavailable"}}`)
				}
				// The other secret still is.
				a, _ := c.Get(t.Context(), "/secrets/other?api-version=7.5", "secrets/other", Normal, v.fetch)
				expect(t, a, Stale, 200, `{"value":"s3cret"}`)
				// A later 200 is stored again.
				v.set(200, `{"value":"back"}`)
				get(t, c, v, Normal)
				expect(t, get(t, c, v, Normal), Hit, 200, `{"value":"back"}`)
			})
		})
	}
}

func TestARefusalDuringAFetchKeepsItsAnswerOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute})
		slow := newVault(`{"value":"before"}`)
		slow.gate = make(chan struct{})
		done := make(chan Answer, 1)
		go func() { done <- get(t, c, slow, Normal) }()
		synctest.Wait()
		refusing := newVault("")
		refusing.set(403, `{"error":{}}`)
		versioned := "/secrets/db-password/" + v32 + "?api-version=7.5"
		c.Get(t.Context(), versioned, item, NoStore, refusing.fetch)
		close(slow.gate)
		expect(t, <-done, Miss, 200, `{"value":"before"}`) // handed to its reader...
		if n, _ := c.Size(); n != 0 {
			t.Errorf("...but stored: %d entries", n) // ...never stored
		}
	})
}

func TestInvalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute})
		v := newVault(`{"value":"v1"}`)
		get(t, c, v, Normal)
		c.Get(t.Context(), "/secrets/db-password/"+v32+"?api-version=7.5", item, Normal, v.fetch)
		c.Get(t.Context(), "/secrets/other?api-version=7.5", "secrets/other", Normal, v.fetch)
		v.set(200, `{"value":"v2"}`)
		c.Invalidate("Secrets/DB-Password")
		if n, _ := c.Size(); n != 1 {
			t.Errorf("%d entries after Invalidate", n)
		}
		expect(t, get(t, c, v, Normal), Miss, 200, `{"value":"v2"}`)

		// A certificate's write drops its key and secret too.
		c.Get(t.Context(), "/keys/web?api-version=7.5", "keys/web", Normal, v.fetch)
		c.Get(t.Context(), "/secrets/web?api-version=7.5", "secrets/web", Normal, v.fetch)
		c.Invalidate("certificates/web")
		if n, _ := c.Size(); n != 2 {
			t.Errorf("%d entries after invalidating a certificate", n)
		}
	})
}

func TestAReadAfterInvalidateDoesNotJoinAnOlderFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute})
		old := newVault(`{"value":"v1"}`)
		old.gate = make(chan struct{})
		before := make(chan Answer, 1)
		go func() { before <- get(t, c, old, Normal) }()
		synctest.Wait()
		c.Invalidate(item) // a PUT through kvproxy succeeded
		fresh := newVault(`{"value":"v2"}`)
		expect(t, get(t, c, fresh, Normal), Miss, 200, `{"value":"v2"}`)
		close(old.gate)
		<-before
		expect(t, get(t, c, fresh, Normal), Hit, 200, `{"value":"v2"}`)
	})
}

func TestExpiredItemsAreNotServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Hour, StaleIfError: 24 * time.Hour})
		now := time.Now().Unix()
		v := newVault(fmt.Sprintf(`{"value":"s","attributes":{"enabled":true,"exp":%d}}`, now-1))
		get(t, c, v, Normal)
		if n, _ := c.Size(); n != 0 {
			t.Fatal("an expired item was stored")
		}
		body := fmt.Sprintf(`{"value":"s","attributes":{"enabled":true,"exp":%d}}`, now+60)
		v.set(200, body)
		get(t, c, v, Normal)
		a := get(t, c, v, Normal)
		expect(t, a, Hit, 200, body)
		if !a.Expires.Equal(time.Unix(now+60, 0)) {
			t.Errorf("Expires %s", a.Expires)
		}
		time.Sleep(time.Minute)
		v.fail(503, "upstream-unavailable", nil)
		expect(t, get(t, c, v, Normal), Miss, 503, `{"error":{"code":"ServiceUnavailable"}}`)
	})
}

func TestEvictionWithinMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: time.Hour, MaxBytes: 1000, Observer: obs})
		body := string(bytes.Repeat([]byte("x"), 100))
		v := newVault(body)
		k := func(i int) string { return "/secrets/s" + strconv.Itoa(i) + "?api-version=7.5" }
		read := func(i int) Answer {
			a, _ := c.Get(t.Context(), k(i), "secrets/s"+strconv.Itoa(i), Normal, v.fetch)
			return a
		}
		for i := range 10 {
			read(i)
		}
		read(0) // s0 is the most recently used now; s1 the least
		read(10)
		read(11)
		if n, b := c.Size(); n != 10 || b != 1000 || obs.entries != 10 || obs.bytes != 1000 || obs.evictions != 2 {
			t.Fatalf("%d entries, %d bytes; observed %d, %d, %d evictions", n, b, obs.entries, obs.bytes, obs.evictions)
		}
		for _, r := range []struct {
			i    int
			want Outcome
		}{{0, Hit}, {3, Hit}, {11, Hit}, {2, Miss}, {1, Miss}} { // s1 and s2 went first
			if a := read(r.i); a.Outcome != r.want {
				t.Errorf("s%d: %s; want %s", r.i, a.Outcome, r.want)
			}
		}
	})
}

func TestOversizedEntryIsNotStored(t *testing.T) {
	c := New(Options{TTL: time.Hour, MaxBytes: 800})
	if c.MaxEntryBytes() != 100 {
		t.Fatalf("MaxEntryBytes %d", c.MaxEntryBytes())
	}
	v := newVault(string(bytes.Repeat([]byte("x"), 101)))
	expect(t, get(t, c, v, Normal), Miss, 200, string(bytes.Repeat([]byte("x"), 101)))
	if n, _ := c.Size(); n != 0 {
		t.Error("stored")
	}
}

func TestCompressedAnswerIsNotStored(t *testing.T) {
	c := New(Options{TTL: time.Hour})
	fetch := func(context.Context) (Result, error) {
		return Result{Status: 200, Body: []byte{0x1f, 0x8b}, Header: []Field{{"content-encoding", "gzip"}}}, nil
	}
	c.Get(t.Context(), key, item, Normal, fetch)
	if n, _ := c.Size(); n != 0 {
		t.Error("stored")
	}
}

func TestNoCacheRefreshesAndNoStoreStoresNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := newCounts()
		c := New(Options{TTL: time.Hour, Observer: obs})
		v := newVault(`{"value":"v1"}`)
		get(t, c, v, Normal)
		v.set(200, `{"value":"v2"}`)
		a := get(t, c, v, NoCache)
		expect(t, a, Bypass, 200, `{"value":"v2"}`)
		if a.Outcome.Header() != "BYPASS" {
			t.Errorf("X-Cache %s", a.Outcome.Header())
		}
		expect(t, get(t, c, v, Normal), Hit, 200, `{"value":"v2"}`)
		v.set(200, `{"value":"v3"}`)
		expect(t, get(t, c, v, NoStore), Bypass, 200, `{"value":"v3"}`)
		expect(t, get(t, c, v, Normal), Hit, 200, `{"value":"v2"}`)
		// A bypass never answers stale: the client asked for the vault.
		v.fail(503, "upstream-unavailable", nil)
		expect(t, get(t, c, v, NoCache), Bypass, 503, `{"error":{"code":"ServiceUnavailable"}}`)
		if n := v.calls.Load(); n != 4 || obs.get("bypass") != 3 {
			t.Errorf("%d fetches; observed %v", n, obs.results)
		}
		// A refusal seen by no-store still drops the name.
		v.set(403, `{}`)
		get(t, c, v, NoStore)
		if n, _ := c.Size(); n != 0 {
			t.Error("no-store's 403 left the entry")
		}
	})
}

func TestAnOlderFetchDoesNotReplaceANewerEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Hour})
		slow := newVault(`{"value":"older"}`)
		slow.gate = make(chan struct{})
		done := make(chan Answer, 1)
		go func() { done <- get(t, c, slow, Normal) }()
		synctest.Wait()
		expect(t, get(t, c, newVault(`{"value":"newer"}`), NoCache), Bypass, 200, `{"value":"newer"}`)
		close(slow.gate)
		<-done
		expect(t, get(t, c, slow, Normal), Hit, 200, `{"value":"newer"}`)
	})
}

func TestValuesNeverPrinted(t *testing.T) {
	c := New(Options{TTL: time.Hour})
	v := newVault(`{"value":"s3cret"}`)
	get(t, c, v, Normal)
	a := get(t, c, v, Normal)
	res, _ := v.fetch(t.Context())
	var log bytes.Buffer
	slog.New(slog.NewJSONHandler(&log, nil)).Info("x", "answer", a, "entry", a.Entry, "result", res)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", a, a, a, a), fmt.Sprintf("%v %+v %#v", a.Entry, a.Entry, a.Entry),
		fmt.Sprintf("%v %+v %#v", res, res, res), log.String()} {
		if bytes.Contains([]byte(s), []byte("s3cret")) {
			t.Errorf("the value is printed: %s", s)
		}
	}
}

func TestFallbackDiagnosisIsADiagnosisCode(t *testing.T) {
	if FallbackDiagnosis != diagnose.UpstreamUnavailable {
		t.Errorf("FallbackDiagnosis %q is not diagnose.UpstreamUnavailable", FallbackDiagnosis)
	}
}

func TestOutcomeNames(t *testing.T) {
	want := map[Outcome][2]string{Off: {"off", ""}, Hit: {"hit", "HIT"}, Miss: {"miss", "MISS"},
		Coalesced: {"coalesced", "MISS"}, Stale: {"stale", "STALE"}, Bypass: {"bypass", "BYPASS"}}
	for o, w := range want {
		if o.String() != w[0] || o.Header() != w[1] {
			t.Errorf("%d: %s %s", o, o, o.Header())
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		err    error
		want   Class
	}{
		{200, nil, Store}, {403, nil, Refused}, {404, nil, Refused}, {429, nil, Transient}, {500, nil, Transient},
		{503, nil, Transient}, {504, nil, Transient}, {401, nil, Pass}, {400, nil, Pass}, {409, nil, Pass},
		{204, nil, Pass}, {0, errors.New("x"), Transient}, {200, errors.New("body cut"), Transient},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.err); got != tt.want {
			t.Errorf("Classify(%d, %v) = %d; want %d", tt.status, tt.err, got, tt.want)
		}
	}
}

func TestExpiresAt(t *testing.T) {
	tests := []struct {
		body string
		want int64 // -1: none
	}{
		{`{"value":"x","attributes":{"exp":1700000000}}`, 1700000000},
		{`{"attributes":{"exp":1.7e9}}`, 1700000000},
		{`{"attributes":{"enabled":true}}`, -1},
		{`{"attributes":{"exp":null}}`, -1},
		{`{"attributes":{"exp":"1700000000"}}`, -1},
		{`{"attributes":{"exp":-5}}`, -1},
		{`{"attributes":{"exp":1e300}}`, -1},
		{`{"policy":{"attributes":{"exp":1}}}`, -1},
		{`not json`, -1},
		{``, -1},
	}
	for _, tt := range tests {
		exp, ok := ExpiresAt([]byte(tt.body))
		if ok != (tt.want >= 0) || ok && exp.Unix() != tt.want {
			t.Errorf("ExpiresAt(%s) = %v, %v; want %d", tt.body, exp, ok, tt.want)
		}
	}
}

func BenchmarkHit(b *testing.B) {
	c := New(Options{TTL: time.Hour})
	v := newVault(`{"value":"s3cret","id":"https://v.vault.azure.net/secrets/db-password/` + v32 + `"}`)
	fetch := v.fetch
	ctx := context.Background()
	c.Get(ctx, key, item, Normal, fetch)
	b.ReportAllocs()
	for b.Loop() {
		if a, _ := c.Get(ctx, key, item, Normal, fetch); a.Outcome != Hit {
			b.Fatal(a.Outcome)
		}
	}
}

func BenchmarkHitFromRequest(b *testing.B) {
	// What the proxy does per request: Cacheable, Key and Get.
	c := New(Options{TTL: time.Hour})
	v := newVault(`{"value":"s3cret"}`)
	fetch := v.fetch
	ctx := context.Background()
	c.Get(ctx, key, item, Normal, fetch)
	b.ReportAllocs()
	for b.Loop() {
		name, _ := Cacheable("GET", "/secrets/db-password")
		if a, _ := c.Get(ctx, Key("/secrets/db-password", "api-version=7.5", "7.5"), name, Normal, fetch); a.Outcome != Hit {
			b.Fatal(a.Outcome)
		}
	}
}

func TestEntriesPastServingAreSweptWhenAnotherIsStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Options{TTL: time.Minute, StaleIfError: time.Hour})
		v := newVault(`{"value":"s3cret"}`)
		get(t, c, v, Normal)
		time.Sleep(time.Minute + time.Hour)
		c.Get(t.Context(), "/secrets/other?api-version=7.5", "secrets/other", Normal, v.fetch)
		if n, b := c.Size(); n != 1 || b != int64(len(`{"value":"s3cret"}`)) {
			t.Errorf("%d entries, %d bytes; the dead one stays", n, b)
		}
	})
}
