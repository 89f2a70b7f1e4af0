package app

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/config"
)

// devIdentityHeader is the playground identity endpoint's shared secret.
const devIdentityHeader = "kvproxy-dev-header"

// runDev starts the playground: an in-memory vault over TLS and a managed
// identity endpoint (App Service protocol), both on 127.0.0.1, and kvproxy
// in front of them with the real azidentity credential and proxy code.
func runDev(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return &config.Error{Problems: []string{fmt.Sprintf("kvproxy dev takes no arguments, got %q", args)}}
	}
	certs, err := azfake.NewTLS()
	if err != nil {
		return err
	}
	vault := azfake.NewVault(azfake.VaultOptions{})
	vaultURL, err := vault.Start(certs, "")
	if err != nil {
		return fmt.Errorf("starting the playground vault: %w", err)
	}
	defer vault.Close()
	ids := azfake.NewIdentityServer(azfake.IdentityOptions{Header: devIdentityHeader})
	idURL, err := ids.Start("")
	if err != nil {
		return fmt.Errorf("starting the playground identity endpoint: %w", err)
	}
	defer ids.Close()

	// azidentity's managed identity reads these from the process
	// environment when it sends each request; this is the documented way
	// to point it at an App Service-protocol endpoint.
	os.Setenv("IDENTITY_ENDPOINT", idURL)
	os.Setenv("IDENTITY_HEADER", devIdentityHeader)

	env := maps.Clone(environ)
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST", "KVPROXY_IDENTITY_CLIENT_ID"} {
		delete(env, k)
	}
	env["KVPROXY_VAULT_URL"] = vaultURL
	env["KVPROXY_TOKEN_SCOPE"] = "https://vault.azure.net/.default"
	env["KVPROXY_CREDENTIAL"] = config.CredentialManagedIdentity
	env["IDENTITY_ENDPOINT"] = idURL
	if _, ok := env["KVPROXY_CACHE_TTL"]; !ok {
		env["KVPROXY_CACHE_TTL"] = "30s" // the playground shows the secret cache (X-Cache)
	}
	if _, ok := env["KVPROXY_LOG_FORMAT"]; !ok {
		env["KVPROXY_LOG_FORMAT"] = "text"
	}
	cfg, err := config.Load(env)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	return Run(ctx, cfg, Deps{
		RootCAs: certs.CertPool,
		Started: func(proxyAddr, adminAddr string) { printDevBanner(stdout, vaultURL, idURL, proxyAddr, adminAddr) },
	}, logger)
}

func printDevBanner(w io.Writer, vaultURL, idURL, proxyAddr, adminAddr string) {
	curl, base := "curl -s", "http://"+proxyAddr
	if p, ok := strings.CutPrefix(proxyAddr, "unix://"); ok {
		curl, base = "curl -s --unix-socket "+p, "http://kvproxy"
	}
	fmt.Fprintf(w, `
kvproxy dev: a local playground. Nothing here talks to Azure.
  vault (in memory, TLS)  %s
  identity endpoint       %s
  proxy                   %s
  admin                   %s  (/healthz /readyz /metrics)

Try:
  %[5]s -i -H 'Metadata: true' %[6]s/secrets/db-password      # twice: X-Cache MISS, then HIT with Age
  %[5]s -H 'Metadata: true' -X PUT -H 'Content-Type: application/json' -d '{"value":"s3cret"}' %[6]s/secrets/my-secret
  %[5]s -H 'Metadata: true' '%[6]s/secrets?maxresults=5'
  %[5]s %[6]s/secrets/db-password                      # refused: no Metadata header
  %[5]s -H 'Metadata: true' %[6]s/secrets/forbidden-rbac   # a 403, diagnosed
Names that show a diagnosis: forbidden-firewall, forbidden-private-link, forbidden-rbac,
forbidden-policy, forbidden-disabled, unauthorized-tenant, unauthorized-audience,
unauthorized-expired, unauthorized-rejected; throttled answers 429. Stop with Ctrl-C.

`, vaultURL, idURL, base, adminURL(adminAddr), curl, base)
}
