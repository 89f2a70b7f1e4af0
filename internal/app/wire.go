package app

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/proxy"
)

// parts are what `kvproxy run` and `kvproxy check` build alike from the
// configuration, so the two can never disagree on which vault, scope,
// credential or transport is used.
type parts struct {
	vault         *url.URL
	scope         string
	explicitScope bool
	kind          auth.Kind
	credOpts      auth.CredentialOptions
	cred          azcore.TokenCredential
	credDesc      string // holds no secret
	transport     *http.Transport
}

// build makes the parts of a validated configuration. Its errors are
// configuration errors.
func build(cfg *config.Config, d Deps) (*parts, error) {
	vaultURL, err := config.ParseVaultURL(cfg.VaultURL)
	if err != nil {
		return nil, &config.Error{Problems: []string{"KVPROXY_VAULT_URL: " + err.Error()}}
	}
	p := &parts{vault: vaultURL}
	p.scope, p.explicitScope = cfg.Scope()
	effective := cfg.EffectiveCredential()
	if p.kind, err = auth.ParseKind(effective); err != nil {
		return nil, &config.Error{Problems: []string{"KVPROXY_CREDENTIAL: " + err.Error()}}
	}
	p.credOpts = auth.CredentialOptions{
		Kind: p.kind, ClientID: cfg.IdentityClientID, TenantID: cfg.AzureTenantID,
		TokenFile: cfg.AzureFederatedTokenFile, ClientSecret: string(cfg.AzureClientSecret),
		AuthorityHost: cfg.AzureAuthorityHost, IdentityEndpoint: cfg.IdentityEndpoint,
		ClientOptions: d.ClientOptions, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
	}
	p.cred, p.credDesc, err = auth.NewCredential(p.credOpts)
	if err != nil {
		return nil, &config.Error{Problems: []string{"KVPROXY_CREDENTIAL=" + effective + ": " + err.Error()}}
	}
	p.transport = proxy.NewTransport(proxy.TransportOptions{RootCAs: d.RootCAs, ResponseHeaderTimeout: cfg.UpstreamTimeout})
	return p, nil
}

// challenges returns the observer of the vault's challenges; cache, when
// not nil, is told the vault's tenant for credentials that take one.
func (p *parts) challenges(cache *auth.Cache, logger *slog.Logger) *auth.Challenges {
	return auth.NewChallenges(auth.ChallengeOptions{
		VaultHost: p.vault.Host, Scope: p.scope, ExplicitScope: p.explicitScope,
		Kind: p.kind, Cache: cache, Logger: logger,
	})
}

// client is an HTTP client toward the vault that follows no redirect.
func (p *parts) client() *http.Client {
	return &http.Client{Transport: p.transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// discover asks the vault for its challenge, as the Azure SDKs do, and
// hands it to ch.
func (p *parts) discover(ctx context.Context, ch *auth.Challenges, apiVersion string) (string, error) {
	c, err := auth.DiscoverChallenge(ctx, p.client(), p.vault, apiVersion)
	if err != nil {
		return "", err
	}
	return ch.Observe(c)
}
