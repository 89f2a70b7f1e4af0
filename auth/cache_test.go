package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/internal/clock"
	"github.com/kvproxy/kvproxy/metrics"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fakeCred is a TokenCredential whose answers a test scripts. Each call is
// numbered from 1; answer decides what call n returns.
type fakeCred struct {
	calls  atomic.Int32
	gate   chan struct{} // when set, GetToken blocks until it is closed
	answer func(n int, opts policy.TokenRequestOptions) (azcore.AccessToken, error)
	mu     sync.Mutex
	opts   []policy.TokenRequestOptions
}

func (f *fakeCred) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	n := int(f.calls.Add(1))
	f.mu.Lock()
	f.opts = append(f.opts, opts)
	f.mu.Unlock()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return azcore.AccessToken{}, ctx.Err()
		}
	}
	return f.answer(n, opts)
}

// lifetimeTokens answers every call with a new token valid for life from clk.
func lifetimeTokens(clk clock.Clock, life time.Duration) func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		return azcore.AccessToken{Token: fmt.Sprintf("token-%d", n), ExpiresOn: clk.Now().Add(life)}, nil
	}
}

func newTestCache(t *testing.T, cred azcore.TokenCredential, clk clock.Clock, mod func(*CacheOptions)) (*Cache, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(prometheus.NewRegistry())
	o := CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default", Clock: clk, Metrics: m,
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

func TestColdCacheConcurrentRequestsCauseOneFetch(t *testing.T) {
	clk := clock.NewFake(t0)
	cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(clk, time.Hour)}
	c, _ := newTestCache(t, cred, clk, nil)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	toks := make(chan string, n)
	started := make(chan struct{}, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			tok, err := c.Token(context.Background())
			errs <- err
			toks <- tok.Token
		}()
	}
	for range n {
		<-started
	}
	// Every goroutine has started; hold the fetch until at least one call
	// is in, then let it complete.
	waitFor(t, func() bool { return cred.calls.Load() >= 1 })
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
			clk := clock.NewFake(t0)
			c, _ := newTestCache(t, &fakeCred{}, clk, func(o *CacheOptions) { o.RefreshBefore = tt.refreshBefore })
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
	clk := clock.NewFake(t0)
	cred := &fakeCred{answer: lifetimeTokens(clk, time.Hour)}
	c, m := newTestCache(t, cred, clk, nil)
	runCache(t, c)
	if err := c.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		tok, err := c.Token(context.Background())
		if err != nil || tok.Token != fmt.Sprintf("token-%d", i) {
			t.Fatalf("round %d: got %q, %v", i, tok.Token, err)
		}
		// The loop sleeps until 55 minutes in; wake it there.
		if !clk.WaitForWaiter(clk.Now(), 5*time.Second) {
			t.Fatal("refresh loop did not go back to sleep")
		}
		clk.Advance(55 * time.Minute)
		waitFor(t, func() bool { return cred.calls.Load() == int32(i+1) })
	}
	waitFor(t, func() bool { tok, _ := c.Token(context.Background()); return tok.Token == "token-4" })
	if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultSuccess)); got != 4 {
		t.Errorf("kvproxy_token_acquisitions_total{result=success} = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.TokenExpiry); got != float64(clk.Now().Add(time.Hour).Unix()) {
		t.Errorf("kvproxy_token_expiry_timestamp_seconds = %v, want the newest token's expiry", got)
	}
}

func TestUnchangedTokenDoesNotSpin(t *testing.T) {
	clk := clock.NewFake(t0)
	// Like azidentity: the same token until 5 minutes before it expires.
	exp := t0.Add(time.Hour)
	cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		if clk.Now().Before(exp.Add(-5 * time.Minute)) {
			return azcore.AccessToken{Token: "cached", ExpiresOn: exp}, nil
		}
		return azcore.AccessToken{Token: fmt.Sprintf("fresh-%d", n), ExpiresOn: clk.Now().Add(time.Hour)}, nil
	}}
	c, m := newTestCache(t, cred, clk, func(o *CacheOptions) { o.RefreshBefore = 20 * time.Minute })
	runCache(t, c)
	if err := c.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	// Walk the clock through the 15 minutes in which the credential keeps
	// answering with the cached token.
	for clk.Now().Before(exp.Add(-4 * time.Minute)) {
		if !clk.WaitForWaiter(clk.Now(), 5*time.Second) {
			t.Fatal("refresh loop stopped waiting")
		}
		next, _ := clk.NextWake()
		clk.Advance(next.Sub(clk.Now()))
		tok, err := c.Token(context.Background())
		if err != nil {
			t.Fatalf("at %v: %v", clk.Now().Sub(t0), err)
		}
		if strings.HasPrefix(tok.Token, "fresh") {
			break
		}
	}
	waitFor(t, func() bool { tok, _ := c.Token(context.Background()); return strings.HasPrefix(tok.Token, "fresh") })
	unchanged := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultUnchanged))
	if unchanged != 1 {
		t.Errorf("%v unchanged fetches; want 1: the next try waits for the credential's cache window", unchanged)
	}
}

// A credential that keeps returning the same token outside azidentity's
// window falls back to a growing delay.
func TestUnchangedTokenBacksOff(t *testing.T) {
	clk := clock.NewFake(t0)
	exp := t0.Add(time.Hour)
	cred := &fakeCred{answer: func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
		return azcore.AccessToken{Token: "same", ExpiresOn: exp}, nil
	}}
	c, m := newTestCache(t, cred, clk, func(o *CacheOptions) { o.RefreshBefore = 4 * time.Minute })
	runCache(t, c)
	if err := c.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	for clk.Now().Before(exp.Add(-time.Minute)) {
		if !clk.WaitForWaiter(clk.Now(), 5*time.Second) {
			t.Fatal("refresh loop stopped waiting")
		}
		next, _ := clk.NextWake()
		if d := next.Sub(clk.Now()); d < time.Second {
			t.Fatalf("next try in %v: spinning", d)
		}
		clk.Advance(next.Sub(clk.Now()))
	}
	if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultUnchanged)); got > 10 {
		t.Errorf("%v unchanged fetches in 3 minutes", got)
	}
}

func TestFailuresBackOffAndRecover(t *testing.T) {
	clk := clock.NewFake(t0)
	var down atomic.Bool
	down.Store(true)
	cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		if down.Load() {
			return azcore.AccessToken{}, errors.New("connection refused")
		}
		return azcore.AccessToken{Token: fmt.Sprintf("token-%d", n), ExpiresOn: clk.Now().Add(time.Hour)}, nil
	}}
	c, m := newTestCache(t, cred, clk, nil)
	runCache(t, c)

	var delays []time.Duration
	for i := 0; i < 8; i++ {
		if !clk.WaitForWaiter(clk.Now(), 5*time.Second) {
			t.Fatal("the refresh loop died after a failure")
		}
		next, _ := clk.NextWake()
		delays = append(delays, next.Sub(clk.Now()))
		clk.Advance(next.Sub(clk.Now()))
		waitFor(t, func() bool { return cred.calls.Load() >= int32(i+2) })
	}
	for i, d := range delays {
		limit := min(time.Second<<i, 30*time.Second)
		if d < limit/2 || d > limit {
			t.Errorf("delay %d = %v, want in [%v, %v]", i, d, limit/2, limit)
		}
	}
	if _, err := c.Token(context.Background()); err == nil {
		t.Fatal("Token succeeded with the identity endpoint down")
	} else if te := (*TokenError)(nil); !errors.As(err, &te) || te.Detail == "" {
		t.Fatalf("Token error %v is not a TokenError with a detail", err)
	}
	down.Store(false)
	clk.WaitForWaiter(clk.Now(), 5*time.Second)
	next, _ := clk.NextWake()
	clk.Advance(next.Sub(clk.Now()))
	if err := c.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal("never recovered:", err)
	}
	if got := testutil.ToFloat64(m.TokenAcquisitions.WithLabelValues(metrics.ResultError)); got < 8 {
		t.Errorf("error count %v, want >= 8", got)
	}
}

func TestNeverServesExpiredToken(t *testing.T) {
	clk := clock.NewFake(t0)
	var fail atomic.Bool
	cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		if fail.Load() {
			return azcore.AccessToken{}, errors.New("identity endpoint down")
		}
		return azcore.AccessToken{Token: "t", ExpiresOn: clk.Now().Add(10 * time.Minute)}, nil
	}}
	c, _ := newTestCache(t, cred, clk, func(o *CacheOptions) { o.RequestRetryInterval = time.Hour })
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	clk.Advance(9*time.Minute + 30*time.Second) // inside the 60s (life/10) margin
	if tok, err := c.Token(context.Background()); err == nil {
		t.Fatalf("served %q 30s before expiry with the refresh failing", tok.Token)
	}
	if c.Ready() {
		t.Error("Ready with no usable token")
	}
}

func TestRequestRetryIntervalBoundsFetchesWhileDown(t *testing.T) {
	clk := clock.NewFake(t0)
	cred := &fakeCred{answer: func(int, policy.TokenRequestOptions) (azcore.AccessToken, error) {
		return azcore.AccessToken{}, errors.New("down")
	}}
	c, _ := newTestCache(t, cred, clk, nil)
	for range 50 {
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("want error")
		}
	}
	if got := cred.calls.Load(); got != 1 {
		t.Fatalf("50 requests within RequestRetryInterval made %d fetches, want 1", got)
	}
	clk.Advance(2 * time.Second)
	if _, err := c.Token(context.Background()); err == nil {
		t.Fatal("want the last error at once")
	}
	waitFor(t, func() bool { return cred.calls.Load() == 2 })
}

func TestRequestCancelDoesNotCancelSharedFetch(t *testing.T) {
	clk := clock.NewFake(t0)
	cred := &fakeCred{gate: make(chan struct{}), answer: lifetimeTokens(clk, time.Hour)}
	c, _ := newTestCache(t, cred, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Token(ctx); errc <- err }()
	waitFor(t, func() bool { return cred.calls.Load() == 1 })
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
}

func TestRenew(t *testing.T) {
	clk := clock.NewFake(t0)
	cred := &fakeCred{answer: func(n int, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
		tok := fmt.Sprintf("token-%d", n)
		if n == 3 {
			tok = "token-2" // the credential's own cache hands the same one back
		}
		return azcore.AccessToken{Token: tok, ExpiresOn: clk.Now().Add(time.Hour)}, nil
	}}
	c, _ := newTestCache(t, cred, clk, nil)
	tok, _ := c.Token(context.Background())
	next, err := c.Renew(context.Background(), tok.Token, "")
	if err != nil || next.Token != "token-2" {
		t.Fatalf("Renew = %q, %v; want token-2", next.Token, err)
	}
	if _, err := c.Renew(context.Background(), "token-2", ""); err == nil {
		t.Fatal("a second renewal within RequestRetryInterval reached the credential")
	}
	if got := cred.calls.Load(); got != 2 {
		t.Fatalf("%d credential calls, want 2", got)
	}
	clk.Advance(2 * time.Second)
	if _, err := c.Renew(context.Background(), "token-2", ""); err == nil {
		t.Fatal("Renew returned the rejected token again without an error")
	}
	if !c.Ready() {
		t.Fatal("renewal that found no other token made the cache unready; the held token is still valid")
	}
	// The credential had no other token: asking again is futile.
	clk.Advance(2 * time.Second)
	before := cred.calls.Load()
	if _, err := c.Renew(context.Background(), "token-2", ""); err == nil || cred.calls.Load() != before {
		t.Fatalf("futile renewal reached the credential (%d -> %d calls), err %v", before, cred.calls.Load(), err)
	}
	clk.Advance(2 * time.Second)
	// A CAE challenge's claims reach the credential.
	challenge := `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ=="`
	if _, err := c.Renew(context.Background(), "token-2", challenge); err != nil {
		t.Fatal(err)
	}
	cred.mu.Lock()
	last := cred.opts[len(cred.opts)-1]
	cred.mu.Unlock()
	if last.Claims != `{"access_token":{"nbf":{"essential":true}}}` {
		t.Errorf("claims sent %q", last.Claims)
	}
}

func BenchmarkTokenHot(b *testing.B) {
	clk := clock.Real{}
	cred := &fakeCred{answer: lifetimeTokens(clk, time.Hour)}
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
	cred := &fakeCred{answer: lifetimeTokens(clock.Real{}, time.Hour)}
	c := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(1000, func() { c.Token(ctx) }); a != 0 { //nolint:errcheck
		t.Fatalf("Token allocates %v times per call with a valid token held, want 0", a)
	}
}

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

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// While the outage is known, no request waits for a fetch in flight (that
// could take the credential's whole retry cycle).
func TestKnownOutageFailsFast(t *testing.T) {
	clk := clock.NewFake(t0)
	gate := make(chan struct{})
	cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		if n > 1 {
			<-gate
		}
		return azcore.AccessToken{}, errors.New("connection refused")
	}}
	defer close(gate)
	c, _ := newTestCache(t, cred, clk, nil)
	if _, err := c.Token(context.Background()); err == nil {
		t.Fatal("want error")
	}
	clk.Advance(2 * time.Second)
	for i := range 20 {
		done := make(chan error, 1)
		go func() { _, err := c.Token(context.Background()); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("want error")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d waited for the fetch in flight", i)
		}
	}
	waitFor(t, func() bool { return cred.calls.Load() == 2 })
}

// A failed renewal while a fresh token is held must not leave the refresh
// loop with a retry it can never satisfy (it used to spin).
func TestFailedRenewDoesNotSpinTheLoop(t *testing.T) {
	clk := clock.NewFake(t0)
	cred := &fakeCred{answer: func(n int, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
		if n == 1 {
			return azcore.AccessToken{Token: "token-1", ExpiresOn: clk.Now().Add(time.Hour)}, nil
		}
		return azcore.AccessToken{}, errors.New("entra is down")
	}}
	c, _ := newTestCache(t, cred, clk, nil)
	runCache(t, c)
	if err := c.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Renew(context.Background(), "token-1", ""); err == nil {
		t.Fatal("want the renewal to fail")
	}
	if !clk.WaitForWaiter(clk.Now(), 5*time.Second) {
		t.Fatal("refresh loop not waiting")
	}
	clk.Advance(10 * time.Second) // past any backoff, well before the refresh point
	time.Sleep(50 * time.Millisecond)
	calls, loops := cred.calls.Load(), c.loops.Load()
	time.Sleep(100 * time.Millisecond)
	if again := cred.calls.Load(); again != calls || calls > 3 {
		t.Fatalf("credential calls went %d -> %d with a fresh token held", calls, again)
	}
	if n := c.loops.Load() - loops; n > 2 {
		t.Fatalf("the refresh loop ran %d times in 100ms with nothing to do: spinning", n)
	}
	if next, ok := clk.NextWake(); !ok || next.Before(t0.Add(50*time.Minute)) {
		t.Fatalf("loop sleeps until %v, want the refresh point", next.Sub(t0))
	}
	if tok, err := c.Token(context.Background()); err != nil || tok.Token != "token-1" {
		t.Fatalf("Token = %q, %v", tok.Token, err)
	}
}
