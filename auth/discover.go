package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Doer sends an HTTP request (an *http.Client).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// DiscoverChallenge sends the vault one unauthenticated request, as the
// Azure SDKs do, and parses the Bearer challenge of its 401 answer. The
// request carries no token and no body.
func DiscoverChallenge(ctx context.Context, client Doer, vault *url.URL, apiVersion string) (kvwire.Challenge, error) {
	u := *vault
	u.Path = "/secrets"
	u.RawQuery = "maxresults=1&api-version=" + url.QueryEscape(apiVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return kvwire.Challenge{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return kvwire.Challenge{}, fmt.Errorf("asking %s for its challenge: %w", vault.Host, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return kvwire.Challenge{}, fmt.Errorf("%s answered an unauthenticated request with %s, not 401 and a challenge; is it a Key Vault?", vault.Host, resp.Status)
	}
	h := strings.Join(resp.Header.Values("WWW-Authenticate"), ", ")
	if h == "" {
		return kvwire.Challenge{}, fmt.Errorf("%s answered 401 without a WWW-Authenticate challenge", vault.Host)
	}
	return kvwire.ParseChallenge(h)
}

// ErrChallengeRefused is wrapped by [Challenges.Observe]'s error when a
// challenge names a resource the vault host may not ask tokens for.
var ErrChallengeRefused = errors.New("challenge refused")

// ChallengeOptions configure [Challenges]. VaultHost and Scope are required.
type ChallengeOptions struct {
	VaultHost string // host[:port] of the configured vault
	Scope     string // the scope tokens are requested for
	// ExplicitScope: KVPROXY_TOKEN_SCOPE was set, so a challenge's resource
	// is not verified and never asked for.
	ExplicitScope bool
	// Kind is the credential in use; when it [Kind.TakesTenant], a learned
	// tenant is passed to Cache.
	Kind  Kind
	Cache *Cache // may be nil (kvproxy check passes the tenant itself)
	// Logger receives what a challenge teaches or why it was refused; nil
	// discards.
	Logger *slog.Logger
}

// Challenges is the one place a vault's challenge is acted on, whether it
// came from the start-up discovery request or from a 401: the challenge's
// scope is verified against the vault host (unless the scope is explicit),
// the vault's tenant is learned and handed to a credential that takes one,
// and a challenge identical to the last one is skipped (vaults repeat the
// same challenge on every 401). It is safe for concurrent use.
type Challenges struct {
	o ChallengeOptions

	mu      sync.Mutex
	tenant  string
	last    kvwire.Challenge
	lastErr error
	seen    bool
}

// NewChallenges returns a Challenges for o.
func NewChallenges(o ChallengeOptions) *Challenges {
	o.VaultHost = strings.ToLower(o.VaultHost)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Challenges{o: o}
}

// Observe takes in a parsed challenge. A CAE challenge (one with an error
// parameter) teaches nothing about the vault and is ignored. Unless the
// scope is explicit, the challenge's resource must pass
// [kvwire.VerifyChallengeScope]; a challenge that fails it is refused whole
// (its tenant is not learned either), logged at ERROR, and the error says
// why. When the scope is explicit and the challenge's scope differs from it,
// it logs a WARN naming both. It returns the challenge's scope.
func (c *Challenges) Observe(ch kvwire.Challenge) (string, error) {
	if ch.Error != "" {
		return "", nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen && ch == c.last {
		if c.lastErr != nil {
			return "", c.lastErr
		}
		s, _ := ch.TokenScope()
		return s, nil
	}
	c.seen, c.last = true, ch
	scope, err := c.learn(ch)
	c.lastErr = err
	if err != nil {
		c.o.Logger.Error("refusing the vault's challenge; no token will be requested for it", slog.String("detail", err.Error()))
		return "", err
	}
	switch {
	case scope != c.o.Scope && !c.o.ExplicitScope:
		c.o.Logger.Warn("the vault's challenge asks for another scope than the one derived from its host; set KVPROXY_TOKEN_SCOPE to use it",
			slog.String("challengeScope", scope), slog.String("scope", c.o.Scope))
	case scope != "" && !strings.EqualFold(scope, c.o.Scope) && c.o.ExplicitScope:
		// KVPROXY_TOKEN_SCOPE wins, but a vault that names another
		// resource will refuse its tokens (audience-mismatch): say so now,
		// once per distinct challenge, rather than at the first 401.
		c.o.Logger.Warn("KVPROXY_TOKEN_SCOPE disagrees with the resource the vault's challenge names; the vault will likely refuse its tokens (audience-mismatch)",
			slog.String("scope", c.o.Scope), slog.String("challengeScope", scope))
	}
	c.o.Logger.Info("vault challenge", slog.String("tenant", ch.TenantID), slog.String("authority", ch.Authority), slog.String("resource", ch.Resource))
	return scope, nil
}

func (c *Challenges) learn(ch kvwire.Challenge) (string, error) {
	scope, err := ch.TokenScope()
	if err != nil && !c.o.ExplicitScope {
		return "", fmt.Errorf("%w: %v", ErrChallengeRefused, err)
	}
	if !c.o.ExplicitScope {
		if err := kvwire.VerifyChallengeScope(c.o.VaultHost, scope); err != nil {
			return "", fmt.Errorf("%w: %v", ErrChallengeRefused, err)
		}
	}
	if ch.TenantID != "" {
		c.tenant = ch.TenantID
		if c.o.Cache != nil && c.o.Kind.TakesTenant() {
			c.o.Cache.SetTenant(ch.TenantID)
		}
	}
	return scope, nil
}

// Tenant returns the vault's tenant as learned from a verified challenge,
// or "".
func (c *Challenges) Tenant() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tenant
}
