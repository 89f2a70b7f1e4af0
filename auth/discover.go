package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// Doer sends an HTTP request (an *http.Client).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// DiscoverChallenge sends the vault one unauthenticated request, as the
// Azure SDKs do, and parses the Bearer challenge of its 401 answer. The
// request carries no token and no body.
func DiscoverChallenge(ctx context.Context, client Doer, vault *url.URL, apiVersion string) (Challenge, error) {
	u := *vault
	u.Path = "/secrets"
	u.RawQuery = "maxresults=1&api-version=" + url.QueryEscape(apiVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Challenge{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Challenge{}, fmt.Errorf("asking %s for its challenge: %w", vault.Host, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return Challenge{}, fmt.Errorf("%s answered an unauthenticated request with %s, not 401 and a challenge; is it a Key Vault?", vault.Host, resp.Status)
	}
	h := strings.Join(resp.Header.Values("WWW-Authenticate"), ", ")
	if h == "" {
		return Challenge{}, fmt.Errorf("%s answered 401 without a WWW-Authenticate challenge", vault.Host)
	}
	return ParseChallenge(h)
}

// Discovery keeps what the vault's challenges said: its tenant, and the
// scope they ask for once verified against the vault host.
type Discovery struct {
	vaultHost string
	// explicit: KVPROXY_TOKEN_SCOPE was set, so the challenge's resource
	// is not used and not verified.
	explicit bool
	tenant   atomic.Pointer[string]
}

// NewDiscovery returns a Discovery for vaultHost (host[:port]).
func NewDiscovery(vaultHost string, explicitScope bool) *Discovery {
	return &Discovery{vaultHost: strings.ToLower(vaultHost), explicit: explicitScope}
}

// ErrChallengeRefused is wrapped by Learn's error when a challenge names a
// resource the vault host may not ask tokens for.
var ErrChallengeRefused = errors.New("challenge refused")

// Learn takes in a parsed challenge. Unless the scope is explicit, the
// challenge's resource must pass [VerifyChallengeScope]; a challenge that
// fails it is refused whole (its tenant is not learned either) and the
// error says why. It returns the challenge's scope.
func (d *Discovery) Learn(c Challenge) (string, error) {
	scope, err := c.TokenScope()
	if err != nil && !d.explicit {
		return "", fmt.Errorf("%w: %v", ErrChallengeRefused, err)
	}
	if !d.explicit {
		if err := VerifyChallengeScope(d.vaultHost, scope); err != nil {
			return "", fmt.Errorf("%w: %v", ErrChallengeRefused, err)
		}
	}
	if c.TenantID != "" {
		t := c.TenantID
		d.tenant.Store(&t)
	}
	return scope, nil
}

// Tenant returns the vault's tenant as learned, or "".
func (d *Discovery) Tenant() string {
	if t := d.tenant.Load(); t != nil {
		return *t
	}
	return ""
}
