package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// The cache's timing tests run in a testing/synctest bubble: time.Now and
// timers there use a fake clock that jumps ahead whenever every goroutine of
// the bubble is blocked, so an hour of token life passes in microseconds and
// no outcome depends on how fast the machine is.

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fakeCred is a TokenCredential whose answers a test scripts. Each call is
// numbered from 1; answer decides what call n returns. The time of every
// call is recorded.
type fakeCred struct {
	calls atomic.Int32
	// gate, when set, blocks the calls after the first gateAfter until it
	// is closed.
	gate      chan struct{}
	gateAfter int
	answer    func(n int, opts policy.TokenRequestOptions) (azcore.AccessToken, error)
	mu        sync.Mutex
	opts      []policy.TokenRequestOptions
	at        []time.Time
}

func (f *fakeCred) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	n := int(f.calls.Add(1))
	f.mu.Lock()
	f.opts = append(f.opts, opts)
	f.at = append(f.at, time.Now())
	f.mu.Unlock()
	if f.gate != nil && n > f.gateAfter {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return azcore.AccessToken{}, ctx.Err()
		}
	}
	return f.answer(n, opts)
}

// callTimes returns when each call was made.
func (f *fakeCred) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}

// lifetimeTokens answers every call with a new token valid for life.
func lifetimeTokens(life time.Duration) func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		return azcore.AccessToken{Token: fmt.Sprintf("token-%d", n), ExpiresOn: time.Now().Add(life)}, nil
	}
}

func newTestCache(t *testing.T, cred azcore.TokenCredential, mod func(*CacheOptions)) (*Cache, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(prometheus.NewRegistry())
	o := CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default", Metrics: m,
		RefreshBefore: 5 * time.Minute, MinBackoff: time.Second, MaxBackoff: 30 * time.Second}
	if mod != nil {
		mod(&o)
	}
	return NewCache(o), m
}

// runCache starts Run and stops it when the test ends.
func runCache(t *testing.T, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitReady(t *testing.T, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal("no token within a minute:", err)
	}
}

func TestColdCacheConcurrentRequestsCauseOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(time.Hour)}
		c, _ := newTestCache(t, cred, nil)
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan error, n)
		toks := make(chan string, n)
		for range n {
			wg.Go(func() {
				tok, err := c.Token(context.Background())
				errs <- err
				toks <- tok.Token
			})
		}
		synctest.Wait() // every request is waiting, and the one fetch is held at the gate
		if got := cred.calls.Load(); got != 1 {
			t.Fatalf("%d credential calls while %d cold requests wait, want 1", got, n)
		}
		close(cred.gate)
		wg.Wait()
		close(errs)
		close(toks)
		for err := range errs {
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
		}
		for tok := range toks {
			if tok != "token-1" {
				t.Fatalf("got %q, want token-1 for every request", tok)
			}
		}
		if got := cred.calls.Load(); got != 1 {
			t.Fatalf("credential called %d times for %d concurrent cold requests, want 1", got, n)
		}
	})
}

// A cold request waits for the fetch in flight at most MaxWait, however
// long the credential takes (azidentity's IMDS retries run for over a
// minute); the fetch goes on and its token serves the next request.
func TestColdRequestWaitsAtMostMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(time.Hour)}
		c, _ := newTestCache(t, cred, func(o *CacheOptions) { o.MaxWait = 2 * time.Second })
		start := time.Now()
		_, err := c.Token(context.Background())
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != ReasonTimeout || !strings.Contains(te.Detail, "2s") {
			t.Fatalf("got %v, want a %s TokenError naming the 2s wait", err, ReasonTimeout)
		}
		if waited := time.Since(start); waited != 2*time.Second {
			t.Errorf("the request waited %v, want MaxWait (2s)", waited)
		}
		// A request with a shorter deadline of its own keeps it.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start = time.Now()
		if _, err := c.Token(ctx); err == nil || time.Since(start) != 500*time.Millisecond {
			t.Errorf("Token with a 500ms deadline: %v after %v", err, time.Since(start))
		}
		if c.LastError() != nil {
			t.Errorf("a wait that ran out recorded a fetch failure: %v", c.LastError())
		}
		close(cred.gate) // the fetch, still in flight, completes
		synctest.Wait()
		start = time.Now()
		tok, err := c.Token(context.Background())
		if err != nil || tok.Token != "token-1" || time.Since(start) != 0 {
			t.Fatalf("after the fetch completed: %q, %v after %v; want token-1 at once", tok.Token, err, time.Since(start))
		}
		if got := cred.calls.Load(); got != 1 {
			t.Errorf("%d credential calls, want 1: the requests that gave up joined the one fetch", got)
		}
	})
}

// The default MaxWait is 3 seconds.
func TestMaxWaitDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(time.Hour)}
		defer close(cred.gate)
		c := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"})
		start := time.Now()
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("got a token from a credential that never answers")
		}
		if waited := time.Since(start); waited != 3*time.Second {
			t.Errorf("waited %v, want 3s", waited)
		}
	})
}

func TestRefreshPoint(t *testing.T) {
	tests := []struct {
		name          string
		life          time.Duration
		refreshOn     time.Duration // offset from now; 0 = none
		refreshBefore time.Duration
		want          time.Duration // refresh point, offset from now
	}{
		{name: "long token refreshes RefreshBefore ahead", life: time.Hour, refreshBefore: 5 * time.Minute, want: 55 * time.Minute},
		{name: "short token refreshes at half life", life: 4 * time.Minute, refreshBefore: 5 * time.Minute, want: 2 * time.Minute},
		{name: "RefreshOn wins", life: 24 * time.Hour, refreshOn: 12 * time.Hour, refreshBefore: 5 * time.Minute, want: 12 * time.Hour},
		{name: "RefreshOn in the past is ignored", life: time.Hour, refreshOn: -time.Minute, refreshBefore: 10 * time.Minute, want: 50 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCache(t, &fakeCred{}, func(o *CacheOptions) { o.RefreshBefore = tt.refreshBefore })
			tok := azcore.AccessToken{Token: "x", ExpiresOn: t0.Add(tt.life)}
			if tt.refreshOn != 0 {
				tok.RefreshOn = t0.Add(tt.refreshOn)
			}
			h := c.newHeld(tok, t0)
			if got := h.refreshAt.Sub(t0); got != tt.want {
				t.Errorf("refresh at +%v, want +%v", got, tt.want)
			}
			if !h.usableUntil.Before(tok.ExpiresOn) || !h.usableUntil.After(h.refreshAt) {
				t.Errorf("usable until %v: want between refresh %v and expiry %v", h.usableUntil, h.refreshAt, tok.ExpiresOn)
			}
		})
	}
}

func TestBackgroundRefreshBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{answer: lifetimeTokens(time.Hour)}
		c, m := newTestCache(t, cred, nil)
		runCache(t, c)
		waitReady(t, c)
		for i := 1; i <= 3; i++ {
			tok, err := c.Token(context.Background())
			if err != nil || tok.Token != fmt.Sprintf("token-%d", i) {
				t.Fatalf("round %d: got %q, %v", i, tok.Token, err)
			}
			time.Sleep(55*time.Minute - time.Second)
			synctest.Wait()
			if got := cred.calls.Load(); got != int32(i) {
				t.Fatalf("round %d: refreshed before the refresh point (%d calls)", i, got)
			}
			time.Sleep(time.Second) // the refresh point: 5 minutes before expiry
			synctest.Wait()
			if got := cred.calls.Load(); got != int32(i+1) {
				t.Fatalf("round %d: %d calls at the refresh point, want %d", i, got, i+1)
			}
		}
		if tok, _ := c.Token(context.Background()); tok.Token != "token-4" {
			t.Fatalf("serving %q after three refreshes, want token-4", tok.Token)
		}
		if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultSuccess)); got != 4 {
			t.Errorf("kvproxy_token_acquisitions_total{result=success} = %v, want 4", got)
		}
		if got := testutil.ToFloat64(m.TokenExpiry); got != float64(time.Now().Add(time.Hour).Unix()) {
			t.Errorf("kvproxy_token_expiry_timestamp_seconds = %v, want the newest token's expiry", got)
		}
	})
}

func TestUnchangedTokenDoesNotSpin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Like azidentity: the same token until 5 minutes before it expires.
		exp := time.Now().Add(time.Hour)
		cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
			if time.Now().Before(exp.Add(-5 * time.Minute)) {
				return azcore.AccessToken{Token: "cached", ExpiresOn: exp}, nil
			}
			return azcore.AccessToken{Token: fmt.Sprintf("fresh-%d", n), ExpiresOn: time.Now().Add(time.Hour)}, nil
		}}
		c, m := newTestCache(t, cred, func(o *CacheOptions) { o.RefreshBefore = 20 * time.Minute })
		runCache(t, c)
		waitReady(t, c)
		// The refresh at 40 minutes gets the cached token back; the next
		// try waits for the credential's cache window, 5 minutes before expiry.
		time.Sleep(56 * time.Minute)
		synctest.Wait()
		if tok, _ := c.Token(context.Background()); !strings.HasPrefix(tok.Token, "fresh") {
			t.Fatalf("serving %q 4 minutes before expiry, want a fresh token", tok.Token)
		}
		if unchanged := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultUnchanged)); unchanged != 1 {
			t.Errorf("%v unchanged fetches; want 1: the next try waits for the credential's cache window", unchanged)
		}
		if got := cred.calls.Load(); got != 3 {
			t.Errorf("%d credential calls, want 3 (first, unchanged, fresh)", got)
		}
	})
}

// A credential that keeps returning the same token outside azidentity's
// window falls back to a growing delay.
func TestUnchangedTokenBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exp := time.Now().Add(time.Hour)
		cred := &fakeCred{answer: func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
			return azcore.AccessToken{Token: "same", ExpiresOn: exp}, nil
		}}
		c, m := newTestCache(t, cred, func(o *CacheOptions) { o.RefreshBefore = 4 * time.Minute })
		runCache(t, c)
		waitReady(t, c)
		time.Sleep(time.Until(exp.Add(-time.Minute)))
		synctest.Wait()
		at := cred.callTimes()
		for i := 1; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d < time.Second {
				t.Fatalf("call %d came %v after the one before: spinning", i+1, d)
			}
		}
		if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultUnchanged)); got < 1 || got > 10 {
			t.Errorf("%v unchanged fetches in the 3 minutes before the last one, want 1 to 10", got)
		}
	})
}

func TestFailuresBackOffAndRecover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
			if down.Load() {
				return azcore.AccessToken{}, errors.New("connection refused")
			}
			return azcore.AccessToken{Token: fmt.Sprintf("token-%d", n), ExpiresOn: time.Now().Add(time.Hour)}, nil
		}}
		c, m := newTestCache(t, cred, nil)
		runCache(t, c)
		// Backoff doubles from 1s to the 30s cap: 9 tries fit in 3 minutes.
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		at := cred.callTimes()
		if len(at) < 9 {
			t.Fatalf("%d tries in 3 minutes: the refresh loop gave up after a failure", len(at))
		}
		for i := 1; i < 9; i++ {
			d := at[i].Sub(at[i-1])
			limit := min(time.Second<<(i-1), 30*time.Second)
			if d < limit/2 || d > limit {
				t.Errorf("delay before try %d = %v, want in [%v, %v]", i+1, d, limit/2, limit)
			}
		}
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("Token succeeded with the identity endpoint down")
		} else if te := (*TokenError)(nil); !errors.As(err, &te) || te.Detail == "" {
			t.Fatalf("Token error %v is not a TokenError with a detail", err)
		}
		down.Store(false)
		time.Sleep(30 * time.Second) // the longest backoff
		synctest.Wait()
		if !c.Ready() {
			t.Fatal("never recovered")
		}
		if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultError)); got < 8 {
			t.Errorf("error count %v, want >= 8", got)
		}
	})
}

func TestNeverServesExpiredToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
			if fail.Load() {
				return azcore.AccessToken{}, errors.New("identity endpoint down")
			}
			return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(10 * time.Minute)}, nil
		}}
		c, _ := newTestCache(t, cred, func(o *CacheOptions) { o.RequestRetryInterval = time.Hour })
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		fail.Store(true)
		time.Sleep(9*time.Minute + 30*time.Second) // inside the 60s (life/10) margin
		if tok, err := c.Token(context.Background()); err == nil {
			t.Fatalf("served %q 30s before expiry with the refresh failing", tok.Token)
		}
		if c.Ready() {
			t.Error("Ready with no usable token")
		}
	})
}

func TestRequestRetryIntervalBoundsFetchesWhileDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{answer: func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
			return azcore.AccessToken{}, errors.New("down")
		}}
		c, _ := newTestCache(t, cred, nil)
		for range 50 {
			if _, err := c.Token(context.Background()); err == nil {
				t.Fatal("want error")
			}
		}
		if got := cred.calls.Load(); got != 1 {
			t.Fatalf("50 requests within RequestRetryInterval made %d fetches, want 1", got)
		}
		time.Sleep(2 * time.Second)
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("want the last error at once")
		}
		synctest.Wait()
		if got := cred.calls.Load(); got != 2 {
			t.Fatalf("%d fetches, want a second one in the background", got)
		}
	})
}

func TestRequestCancelDoesNotCancelSharedFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(time.Hour)}
		c, _ := newTestCache(t, cred, nil)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := c.Token(ctx); errc <- err }()
		synctest.Wait()
		if got := cred.calls.Load(); got != 1 {
			t.Fatalf("%d fetches, want 1", got)
		}
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("cancelled request got a token")
		}
		res := make(chan string, 1)
		go func() { tok, _ := c.Token(context.Background()); res <- tok.Token }()
		close(cred.gate)
		if got := <-res; got != "token-1" {
			t.Fatalf("second request got %q: the first request's cancellation killed the shared fetch", got)
		}
		if got := cred.calls.Load(); got != 1 {
			t.Fatalf("%d fetches, want 1", got)
		}
	})
}

func TestRenew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{answer: func(n int, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
			tok := fmt.Sprintf("token-%d", n)
			if n == 3 {
				tok = "token-2" // the credential's own cache hands the same one back
			}
			return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(time.Hour)}, nil
		}}
		c, _ := newTestCache(t, cred, nil)
		none := kvwire.Challenge{}
		tok, _ := c.Token(context.Background())
		next, err := c.Renew(context.Background(), tok.Token, none)
		if err != nil || next.Token != "token-2" {
			t.Fatalf("Renew = %q, %v; want token-2", next.Token, err)
		}
		if _, err := c.Renew(context.Background(), "token-2", none); err == nil {
			t.Fatal("a second renewal within RequestRetryInterval reached the credential")
		}
		if got := cred.calls.Load(); got != 2 {
			t.Fatalf("%d credential calls, want 2", got)
		}
		time.Sleep(2 * time.Second)
		if _, err := c.Renew(context.Background(), "token-2", none); err == nil {
			t.Fatal("Renew returned the rejected token again without an error")
		}
		if !c.Ready() {
			t.Fatal("renewal that found no other token made the cache unready; the held token is still valid")
		}
		// The credential had no other token: asking again is futile.
		time.Sleep(2 * time.Second)
		before := cred.calls.Load()
		if _, err := c.Renew(context.Background(), "token-2", none); err == nil || cred.calls.Load() != before {
			t.Fatalf("futile renewal reached the credential (%d -> %d calls), err %v", before, cred.calls.Load(), err)
		}
		time.Sleep(2 * time.Second)
		// A CAE challenge's claims reach the credential.
		cae := kvwire.Challenge{Authority: "https://login.microsoftonline.com/common/oauth2/authorize", Error: "insufficient_claims",
			Claims: `{"access_token":{"nbf":{"essential":true}}}`}
		if _, err := c.Renew(context.Background(), "token-2", cae); err != nil {
			t.Fatal(err)
		}
		cred.mu.Lock()
		last := cred.opts[len(cred.opts)-1]
		cred.mu.Unlock()
		if last.Claims != cae.Claims {
			t.Errorf("claims sent %q", last.Claims)
		}
	})
}

// A renewal waits for the credential at most MaxWait too, and the token
// held keeps being served.
func TestRenewWaitsAtMostMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), gateAfter: 1, answer: lifetimeTokens(time.Hour)}
		defer close(cred.gate)
		c, _ := newTestCache(t, cred, func(o *CacheOptions) { o.MaxWait = time.Second })
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := c.Renew(context.Background(), "token-1", kvwire.Challenge{})
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != ReasonTimeout || time.Since(start) != time.Second {
			t.Fatalf("Renew: %v after %v; want a %s TokenError after MaxWait (1s)", err, time.Since(start), ReasonTimeout)
		}
		if tok, err := c.Token(context.Background()); err != nil || tok.Token != "token-1" {
			t.Errorf("Token during the renewal: %q, %v; want the held token", tok.Token, err)
		}
	})
}

func BenchmarkTokenHot(b *testing.B) {
	cred := &fakeCred{answer: lifetimeTokens(time.Hour)}
	c := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"})
	if _, err := c.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestTokenHotPathDoesNotAllocate(t *testing.T) {
	cred := &fakeCred{answer: lifetimeTokens(time.Hour)}
	c := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(1000, func() { c.Token(ctx) }); a != 0 { //nolint:errcheck
		t.Fatalf("Token allocates %v times per call with a valid token held, want 0", a)
	}
}

// waitFor polls cond in real time: for tests with real network peers,
// outside a synctest bubble.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// While the outage is known, no request waits for a fetch in flight (that
// could take the credential's whole retry cycle).
func TestKnownOutageFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cred := &fakeCred{gate: make(chan struct{}), gateAfter: 1, answer: func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
			return azcore.AccessToken{}, errors.New("connection refused")
		}}
		defer close(cred.gate)
		c, _ := newTestCache(t, cred, nil)
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("want error")
		}
		time.Sleep(2 * time.Second)
		for i := range 20 {
			done := make(chan error, 1)
			go func() { _, err := c.Token(context.Background()); done <- err }()
			synctest.Wait() // the request has returned, or is blocked waiting
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("want error")
				}
			default:
				t.Fatalf("request %d waits for the fetch in flight", i)
			}
		}
		if got := cred.calls.Load(); got != 2 {
			t.Fatalf("%d fetches, want 2 (the first and one background retry)", got)
		}
	})
}

// A failed renewal while a fresh token is held must not leave the refresh
// loop with a retry it can never satisfy (it used to spin). In the bubble a
// spinning loop never blocks, so fake time cannot advance and the test's
// sleep never returns: the watchdog, in real time, turns that into a failure.
func TestFailedRenewDoesNotSpinTheLoop(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
				if n == 1 {
					return azcore.AccessToken{Token: "token-1", ExpiresOn: time.Now().Add(time.Hour)}, nil
				}
				return azcore.AccessToken{}, errors.New("entra is down")
			}}
			c, _ := newTestCache(t, cred, nil)
			runCache(t, c)
			waitReady(t, c)
			if _, err := c.Renew(context.Background(), "token-1", kvwire.Challenge{}); err == nil {
				t.Error("want the renewal to fail")
				return
			}
			time.Sleep(10 * time.Second) // past any backoff
			calls := cred.calls.Load()
			time.Sleep(time.Until(start.Add(54 * time.Minute)))
			if again := cred.calls.Load(); again != calls || calls != 2 {
				t.Errorf("credential calls went %d -> %d with a fresh token held, want 2 throughout", calls, again)
			}
			time.Sleep(2 * time.Minute) // past the refresh point at 55 minutes
			synctest.Wait()
			if got := cred.calls.Load(); got <= calls {
				t.Errorf("no refresh at the refresh point (%d calls)", got)
			}
			if tok, err := c.Token(context.Background()); err != nil || tok.Token != "token-1" {
				t.Errorf("Token = %q, %v; want the held token while it is usable", tok.Token, err)
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("fake time stopped: the refresh loop never sleeps (spinning)")
	}
}
