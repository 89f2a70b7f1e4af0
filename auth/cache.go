package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"golang.org/x/sync/singleflight"

	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// CacheOptions configure a [Cache]. Credential and Scope are required.
type CacheOptions struct {
	Credential azcore.TokenCredential
	Scope      string
	// TenantID is passed to credentials that accept one (workload identity,
	// client secret); "" uses the credential's own tenant.
	TenantID string
	// RefreshBefore: refresh this long before expiry, at most half the
	// token's lifetime. Used when the credential gives no RefreshOn.
	RefreshBefore time.Duration
	// FetchTimeout bounds one fetch from the credential (default 1m).
	FetchTimeout time.Duration
	// MaxWait bounds how long a request waits for a fetch in flight
	// (default 3s): then it gets a *TokenError with Reason timeout, while
	// the fetch goes on in the background and its token serves the
	// requests that follow. A credential may retry for far longer than a
	// client should be kept waiting (azidentity's IMDS policy: over a
	// minute).
	MaxWait time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between failed fetches (defaults 1s and 30s).
	MinBackoff, MaxBackoff time.Duration
	// RequestRetryInterval (default 1s) bounds what requests can make the
	// credential do: after a failed fetch, a request that finds no valid
	// token gets the last error at once and starts a background fetch only
	// if the last one failed at least this long ago; and Renew reaches the
	// credential at most once per interval.
	RequestRetryInterval time.Duration
	Metrics              *metrics.Metrics
	Logger               *slog.Logger
	// Describe explains a credential error (default [Describe]; pass
	// [CredentialOptions.Describe] for advice on the credential in use).
	Describe func(error) *TokenError
}

// Cache holds the current access token and keeps it fresh. Token is safe
// for concurrent use and does not allocate while a valid token is held.
type Cache struct {
	o     CacheOptions
	cur   atomic.Pointer[held]
	sf    singleflight.Group
	kick  chan struct{}
	ready chan struct{}
	once  sync.Once

	// base is the context fetches run under: no request can cancel a
	// fetch other requests are waiting for; Run's end does.
	base   context.Context
	cancel context.CancelFunc

	tenant atomic.Pointer[string] // overrides o.TenantID once learned

	mu        sync.Mutex
	lastErr   *TokenError
	failedAt  time.Time
	retryAt   time.Time    // next background attempt after a failure; zero when healthy
	failures  int          // consecutive failures
	unchanged int          // consecutive fetches that returned the token already held
	renewedAt time.Time    // last Renew that reached the credential
	futile    string       // a rejected token the credential handed back when asked to renew it
	fetching  atomic.Int32 // fetches in flight (a refresh and a renewal may overlap)
}

// held is an immutable snapshot of the token being served.
type held struct {
	tok         azcore.AccessToken
	claims      kvwire.Claims
	usableUntil time.Time // never handed out at or after this instant
	refreshAt   time.Time // background refresh starts here
}

// NewCache returns a cache; call Run to start acquiring tokens.
func NewCache(o CacheOptions) *Cache {
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = time.Minute
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 3 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.RequestRetryInterval <= 0 {
		o.RequestRetryInterval = time.Second
	}
	if o.RefreshBefore <= 0 {
		o.RefreshBefore = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Describe == nil {
		o.Describe = Describe
	}
	base, cancel := context.WithCancel(context.Background())
	return &Cache{o: o, kick: make(chan struct{}, 1), ready: make(chan struct{}), base: base, cancel: cancel}
}

// Token returns a token that is not expired. While one is held this is a
// single atomic load. Otherwise, on a cold start, it waits for the fetch in
// flight (starting one if needed) for at most MaxWait or until ctx ends; a
// fetch that outlasts the wait goes on and stores its token. Once a fetch
// has failed, Token returns that failure at once. Errors are *TokenError.
func (c *Cache) Token(ctx context.Context) (azcore.AccessToken, error) {
	if h := c.cur.Load(); h != nil && time.Now().Before(h.usableUntil) {
		return h.tok, nil
	}
	return c.slowToken(ctx)
}

func (c *Cache) slowToken(ctx context.Context) (azcore.AccessToken, error) {
	c.mu.Lock()
	lastErr, failedAt := c.lastErr, c.failedAt
	c.mu.Unlock()
	if lastErr != nil {
		// The outage is known: no request waits out the credential's own
		// retries. At most one per RequestRetryInterval starts a fetch in
		// the background, so recovery is noticed soon after it happens.
		if time.Since(failedAt) >= c.o.RequestRetryInterval && c.fetching.Load() == 0 {
			c.sf.DoChan("token", c.fetch)
		}
		return azcore.AccessToken{}, lastErr
	}
	h, err := c.await(ctx, c.sf.DoChan("token", c.fetch))
	if err != nil {
		return azcore.AccessToken{}, err
	}
	if !time.Now().Before(h.usableUntil) {
		return azcore.AccessToken{}, &TokenError{Reason: ReasonExpired, Detail: "the credential returned a token that is already expired or about to expire; check the clock of this machine and of the identity endpoint"}
	}
	return h.tok, nil
}

// await waits for the outcome of a fetch in flight, at most MaxWait and
// never past ctx's end. Giving up does not stop the fetch: it runs under
// the cache's context, and fetchWith stores what it gets.
func (c *Cache) await(ctx context.Context, ch <-chan singleflight.Result) (*held, error) {
	wait := time.NewTimer(c.o.MaxWait)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*held), nil
	case <-wait.C:
		return nil, &TokenError{Reason: ReasonTimeout, Err: errMaxWait,
			Detail: fmt.Sprintf("no token arrived within %v; the identity endpoint is slow or unreachable (kvproxy keeps asking it in the background)", c.o.MaxWait)}
	case <-ctx.Done():
		return nil, &TokenError{Reason: ReasonTimeout, Err: ctx.Err(),
			Detail: "no token arrived before the request's deadline; the identity endpoint is slow or unreachable"}
	}
}

// errMaxWait is the cause of a TokenError of a request that waited
// MaxWait for a fetch.
var errMaxWait = errors.New("waited the longest a request waits for a token fetch")

// SetTenant sets the tenant passed to credentials that accept one (learned
// from the vault's challenge).
func (c *Cache) SetTenant(tenant string) { c.tenant.Store(&tenant) }

func (c *Cache) tenantID() string {
	if t := c.tenant.Load(); t != nil {
		return *t
	}
	return c.o.TenantID
}

// Ready reports whether a token that is not expired is held.
func (c *Cache) Ready() bool {
	h := c.cur.Load()
	return h != nil && time.Now().Before(h.usableUntil)
}

// WaitReady blocks until the first token is held or ctx ends.
func (c *Cache) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Claims returns the claims of the token held, and false if none is.
func (c *Cache) Claims() (kvwire.Claims, bool) {
	if h := c.cur.Load(); h != nil {
		return h.claims, true
	}
	return kvwire.Claims{}, false
}

// LastError returns the most recent fetch failure, or nil after a success.
func (c *Cache) LastError() *TokenError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Renew asks for a replacement of a token the vault rejected (answered
// 401), passing on the claims of challenge when it is a CAE challenge
// (error insufficient_claims). The token held keeps being served meanwhile:
// it is not expired, and readiness means "a valid token is held". Renew
// returns a token other than rejected, or an error when the credential has
// none to offer (azidentity hands back its cached token until it nears
// expiry; once it has, that token is not renewed again without a claims
// challenge) or a renewal ran less than RequestRetryInterval ago, so a
// vault that keeps answering 401 cannot drive the identity endpoint. Like
// Token, it waits for the credential at most MaxWait.
func (c *Cache) Renew(ctx context.Context, rejected string, challenge kvwire.Challenge) (azcore.AccessToken, error) {
	now := time.Now()
	if h := c.cur.Load(); h != nil && h.tok.Token != rejected && now.Before(h.usableUntil) {
		return h.tok, nil // renewed already, by another request
	}
	claims := ""
	if challenge.Error == "insufficient_claims" {
		claims = challenge.Claims
	}
	c.mu.Lock()
	switch {
	case claims == "" && rejected == c.futile:
		// Asked already: the credential answered with this very token
		// (its own cache). Only a claims challenge or the next refresh
		// can bring another, so do not ask again.
		c.mu.Unlock()
		return azcore.AccessToken{}, &TokenError{Reason: ReasonRejected,
			Detail: "the vault rejected the token and the credential has no other to offer yet"}
	case !c.renewedAt.IsZero() && now.Sub(c.renewedAt) < c.o.RequestRetryInterval:
		c.mu.Unlock()
		return azcore.AccessToken{}, &TokenError{Reason: ReasonRejected,
			Detail: "the vault rejected the token, and it was renewed moments ago"}
	}
	c.renewedAt = now
	c.mu.Unlock()
	h, err := c.await(ctx, c.sf.DoChan("renew", func() (any, error) { return c.fetchWith(claims) }))
	if err != nil {
		return azcore.AccessToken{}, err
	}
	if h.tok.Token == rejected {
		if claims == "" {
			c.mu.Lock()
			c.futile = rejected
			c.mu.Unlock()
		}
		return azcore.AccessToken{}, &TokenError{Reason: ReasonRejected,
			Detail: "the vault rejected the token and the credential has no other to offer yet"}
	}
	return h.tok, nil
}

// Run acquires the first token and keeps it fresh until ctx ends. It never
// returns early: failures are retried forever with jittered exponential
// backoff while the still-valid token keeps being served.
func (c *Cache) Run(ctx context.Context) {
	defer c.cancel()
	stop := context.AfterFunc(ctx, c.cancel)
	defer stop()
	for {
		if at, now := c.nextAttempt(); !at.After(now) {
			c.sf.Do("token", c.fetch) //nolint:errcheck // the outcome is recorded by fetch
		} else {
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
			case <-time.After(time.Until(at)):
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// nextAttempt is when the background loop fetches next, and the time now.
func (c *Cache) nextAttempt() (at, now time.Time) {
	now = time.Now()
	c.mu.Lock()
	retryAt := c.retryAt
	c.mu.Unlock()
	if !retryAt.IsZero() {
		return retryAt, now
	}
	h := c.cur.Load()
	if h == nil {
		return now, now
	}
	return h.refreshAt, now
}

func (c *Cache) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// fetch asks the credential for a token. It runs under singleflight, so at
// most one is in flight; its context is the cache's, not any request's.
func (c *Cache) fetch() (any, error) {
	// A caller may have found the cache empty just before the previous
	// fetch stored its token; that token is fresh, so hand it over.
	if h := c.cur.Load(); h != nil && time.Now().Before(h.refreshAt) {
		c.mu.Lock()
		c.retryAt = time.Time{} // nothing to retry: never leave the loop a past deadline
		c.mu.Unlock()
		return h, nil
	}
	return c.fetchWith("")
}

func (c *Cache) fetchWith(claims string) (any, error) {
	c.fetching.Add(1)
	defer c.fetching.Add(-1)
	defer c.signal()

	ctx, cancel := context.WithTimeout(c.base, c.o.FetchTimeout)
	defer cancel()
	start := time.Now()
	tok, err := c.o.Credential.GetToken(ctx, policy.TokenRequestOptions{
		Scopes:   []string{c.o.Scope},
		TenantID: c.tenantID(),
		Claims:   claims,
	})
	now := time.Now()
	c.o.Metrics.ObserveTokenFetch(now.Sub(start).Seconds())
	if err == nil && !tok.ExpiresOn.After(now) {
		err = errors.New("the credential returned an expired token")
	}
	if err != nil {
		return nil, c.recordFailure(err, now)
	}

	prev := c.cur.Load()
	if prev != nil && prev.tok.Token == tok.Token && now.Before(prev.usableUntil) {
		return c.recordUnchanged(prev, now), nil
	}
	h := c.newHeld(tok, now)
	c.cur.Store(h)
	c.mu.Lock()
	c.lastErr, c.retryAt, c.failures, c.unchanged = nil, time.Time{}, 0, 0
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })
	c.updateGauges(h)
	c.o.Metrics.CountTokenResult(metrics.ResultSuccess)
	c.o.Logger.Info("token acquired",
		slog.String("tid", h.claims.TenantID), slog.String("oid", h.claims.ObjectID),
		slog.String("appid", h.claims.AppID), slog.Time("expiresOn", tok.ExpiresOn),
		slog.Time("refreshAt", h.refreshAt))
	return h, nil
}

// newHeld computes when a fresh token is refreshed and until when it is
// served. The refresh point is RefreshOn when the credential gives one,
// else ExpiresOn − min(RefreshBefore, lifetime/2). A token is served until
// min(30s, lifetime/10) before it expires, so it cannot expire in flight.
func (c *Cache) newHeld(tok azcore.AccessToken, now time.Time) *held {
	life := tok.ExpiresOn.Sub(now)
	margin := min(30*time.Second, life/10)
	h := &held{tok: tok, usableUntil: tok.ExpiresOn.Add(-margin)}
	h.claims, _ = kvwire.ParseClaims(tok.Token) // claims are for diagnostics only
	switch {
	case !tok.RefreshOn.IsZero() && tok.RefreshOn.After(now) && tok.RefreshOn.Before(h.usableUntil):
		h.refreshAt = tok.RefreshOn
	default:
		h.refreshAt = tok.ExpiresOn.Add(-min(c.o.RefreshBefore, life/2))
	}
	return h
}

// sdkCacheWindow: azidentity (MSAL) serves its cached token until this
// long before expiry, and does not keep RefreshOn in its cache, so asking
// earlier only gets the same token back.
const sdkCacheWindow = 5 * time.Minute

// recordUnchanged handles a fetch that returned the token already held.
// Keep serving it and ask again once the credential's cache will let go of
// it (just inside sdkCacheWindow), or, for a credential that behaves
// otherwise, after a growing delay; never later than the token is usable,
// never sooner than a few seconds, so the loop cannot spin.
func (c *Cache) recordUnchanged(prev *held, now time.Time) *held {
	c.mu.Lock()
	c.unchanged++
	n := c.unchanged
	c.lastErr, c.retryAt, c.failures = nil, time.Time{}, 0
	c.mu.Unlock()
	next := *prev
	next.refreshAt = prev.tok.ExpiresOn.Add(-sdkCacheWindow + time.Second + rand.N(5*time.Second))
	if !next.refreshAt.After(now.Add(5 * time.Second)) {
		next.refreshAt = now.Add(c.backoff(n, 5*time.Second, 5*time.Minute))
	}
	if last := prev.usableUntil.Add(-time.Second); next.refreshAt.After(last) {
		next.refreshAt = maxTime(last, now.Add(c.o.MinBackoff))
	}
	c.cur.CompareAndSwap(prev, &next)
	c.o.Metrics.CountTokenResult(metrics.ResultUnchanged)
	c.o.Logger.Debug("credential returned the token already held; will ask again",
		slog.Duration("in", next.refreshAt.Sub(now)))
	return &next
}

func (c *Cache) recordFailure(err error, now time.Time) *TokenError {
	te := c.o.Describe(err)
	h := c.cur.Load()
	c.mu.Lock()
	c.failures++
	n := c.failures
	wait := c.backoff(n, c.o.MinBackoff, c.o.MaxBackoff)
	c.lastErr, c.failedAt = te, now
	if h == nil || !now.Before(h.refreshAt) {
		// The loop has a fetch to retry. A failed renewal while a fresh
		// token is held leaves the loop's schedule alone: it refreshes at
		// refreshAt anyway, and a retry time it could not act on would
		// wake it forever.
		c.retryAt = now.Add(wait)
	}
	c.mu.Unlock()
	c.o.Metrics.CountTokenResult(metrics.ResultError)
	attrs := []any{slog.String("reason", te.Reason), slog.String("detail", te.Detail),
		slog.Int("failures", n), slog.Duration("retryIn", wait)}
	if h != nil && now.Before(h.usableUntil) {
		attrs = append(attrs, slog.Time("servingTokenUntil", h.usableUntil))
	}
	c.o.Logger.Warn("token acquisition failed", attrs...)
	return te
}

// backoff returns the n-th (1-based) jittered exponential delay: a random
// duration in [d/2, d] where d = min(base·2^(n−1), cap).
func (c *Cache) backoff(n int, base, cap time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < cap; i++ {
		d *= 2
	}
	d = min(d, cap)
	half := d / 2
	return half + rand.N(half+1)
}

func (c *Cache) updateGauges(h *held) {
	if h == nil {
		c.o.Metrics.SetTokenExpiry(0)
		return
	}
	c.o.Metrics.SetTokenExpiry(h.tok.ExpiresOn.Unix())
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Reasons a token cannot be had, as TokenError.Reason.
const (
	ReasonUnreachable   = "identity-endpoint-unreachable"
	ReasonNotAssigned   = "identity-not-assigned"
	ReasonTokenFile     = "federated-token-file"
	ReasonRejected      = "credential-rejected"
	ReasonUnavailable   = "credential-unavailable"
	ReasonTimeout       = "timeout"
	ReasonExpired       = "expired-token"
	ReasonCredentialErr = "credential-error"
)

// TokenError says why no valid token could be had, in words a user can act
// on. It never contains a token or a secret.
type TokenError struct {
	Reason string // one of the Reason constants
	Detail string // what failed and what to check
	Err    error  // the underlying error; not shown to clients
}

// Error returns Detail: what failed, in words a user can act on. It is what
// a client is told when no token can be had, so it never names a secret.
func (e *TokenError) Error() string { return e.Detail }

// Unwrap returns the underlying error.
func (e *TokenError) Unwrap() error { return e.Err }
