package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/kvproxy/kvproxy/kvwire"
)

func TestDiscoverChallenge(t *testing.T) {
	var sawAuth bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = r.Header.Get("Authorization") != ""
		if r.URL.Query().Get("api-version") != "7.5" {
			t.Errorf("query %q", r.URL.RawQuery)
		}
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c, err := DiscoverChallenge(context.Background(), srv.Client(), u, "7.5")
	if err != nil {
		t.Fatal(err)
	}
	if sawAuth {
		t.Error("the discovery request carried an Authorization header")
	}
	if c.TenantID != "72f988bf-86f1-41af-91ab-2d7cd011db47" || c.Resource != "https://vault.azure.net" {
		t.Errorf("challenge %+v", c)
	}
}

func TestDiscoverChallengeNotAVault(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	if _, err := DiscoverChallenge(context.Background(), srv.Client(), u, "7.5"); err == nil {
		t.Fatal("a 200 to an unauthenticated request was taken for a challenge")
	}
}

func TestChallengesObserve(t *testing.T) {
	tests := []struct {
		name       string
		host       string
		explicit   bool
		kind       Kind
		resource   string
		wantErr    bool
		wantTenant string // learned
		wantPassed string // handed to the cache
	}{
		{name: "vault resource", host: "myvault.vault.azure.net", kind: KindWorkloadIdentity, resource: "https://vault.azure.net", wantTenant: "t1", wantPassed: "t1"},
		{name: "managed identity takes no tenant", host: "myvault.vault.azure.net", kind: KindManagedIdentity, resource: "https://vault.azure.net", wantTenant: "t1"},
		{name: "hostile resource refused", host: "myvault.vault.azure.net", kind: KindClientSecret, resource: "https://management.azure.com", wantErr: true},
		{name: "look-alike host refused", host: "myvault.vault.azure.net.evil.example", kind: KindClientSecret, resource: "https://vault.azure.net", wantErr: true},
		{name: "http resource refused", host: "myvault.vault.azure.net", kind: KindClientSecret, resource: "http://vault.azure.net", wantErr: true},
		{name: "explicit scope skips the check", host: "127.0.0.1:8443", explicit: true, kind: KindClientSecret, resource: "https://vault.azure.net", wantTenant: "t1", wantPassed: "t1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := NewCache(CacheOptions{Scope: "https://vault.azure.net/.default"})
			c := NewChallenges(ChallengeOptions{VaultHost: tt.host, Scope: "https://vault.azure.net/.default",
				ExplicitScope: tt.explicit, Kind: tt.kind, Cache: cache})
			ch := kvwire.Challenge{Authority: "https://login.microsoftonline.com/t1", TenantID: "t1", Resource: tt.resource}
			for range 2 { // the repeat is skipped and gives the same answer
				_, err := c.Observe(ch)
				if (err != nil) != tt.wantErr {
					t.Fatalf("err %v, want error %v", err, tt.wantErr)
				}
				if tt.wantErr && !errors.Is(err, ErrChallengeRefused) {
					t.Errorf("error %v is not ErrChallengeRefused", err)
				}
			}
			if c.Tenant() != tt.wantTenant {
				t.Errorf("tenant %q, want %q (a refused challenge teaches nothing)", c.Tenant(), tt.wantTenant)
			}
			if got := cache.tenantID(); got != tt.wantPassed {
				t.Errorf("tenant passed to the credential %q, want %q", got, tt.wantPassed)
			}
		})
	}
}

func TestChallengesIgnoreCAE(t *testing.T) {
	c := NewChallenges(ChallengeOptions{VaultHost: "v.vault.azure.net", Scope: "https://vault.azure.net/.default"})
	if _, err := c.Observe(kvwire.Challenge{Authority: "https://login.microsoftonline.com/common", TenantID: "common", Error: "insufficient_claims"}); err != nil {
		t.Fatal(err)
	}
	if c.Tenant() != "" {
		t.Errorf("a CAE challenge taught tenant %q", c.Tenant())
	}
}

func TestURLSecretsNeverDescribed(t *testing.T) {
	_, desc, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity, IdentityEndpoint: "http://user:pa55@127.0.0.1:9/token?sig=s3cr3t#frag"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(desc, "pa55") || strings.Contains(desc, "s3cr3t") || strings.Contains(desc, "frag") {
		t.Errorf("description %q names a URL secret", desc)
	}
	te := Describe(errors.New("ManagedIdentityCredential: GET http://user:pa55@127.0.0.1:9/token?sig=s3cr3t&api-version=2019-08-01: 500"))
	if strings.Contains(te.Detail, "pa55") || strings.Contains(te.Detail, "s3cr3t") {
		t.Errorf("detail %q names a URL secret", te.Detail)
	}
	if !strings.Contains(te.Detail, "http://127.0.0.1:9/token") {
		t.Errorf("detail %q lost the endpoint", te.Detail)
	}
}

func TestWorkloadIdentityAdvice(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/token"
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	if err := os.WriteFile(file, []byte(enc(`{"alg":"RS256"}`)+"."+enc(`{"iss":"https://oidc.example/cluster","exp":4102444800}`)+".c2ln"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := CredentialOptions{Kind: KindWorkloadIdentity, ClientID: "c1", TenantID: "t1", TokenFile: file, AuthorityHost: "https://127.0.0.1:1/"}
	te := o.Describe(errors.New("WorkloadIdentityCredential: Post \"https://127.0.0.1:1/t1/oauth2/v2.0/token\": dial tcp 127.0.0.1:1: connect: connection refused"))
	for _, want := range []string{"Microsoft Entra ID is unreachable", "authority https://127.0.0.1:1/", "client ID c1", "tenant t1", "token file " + file + ": present, issuer https://oidc.example/cluster", "AZURE_AUTHORITY_HOST"} {
		if !strings.Contains(te.Detail, want) {
			t.Errorf("detail lacks %q: %s", want, te.Detail)
		}
	}
	if strings.Contains(te.Detail, "169.254.169.254") {
		t.Errorf("workload identity got managed identity advice: %s", te.Detail)
	}
	o.TokenFile = dir + "/missing"
	if te := o.Describe(errors.New("connection refused")); !strings.Contains(te.Detail, "missing") {
		t.Errorf("a missing token file is not named: %s", te.Detail)
	}
	if err := CheckTokenFile(dir + "/missing"); err == nil {
		t.Error("CheckTokenFile accepted a missing file")
	}
	// Managed identity keeps its own advice.
	mi := CredentialOptions{Kind: KindManagedIdentity}
	if te := mi.Describe(errors.New("dial tcp 169.254.169.254:80: connect: connection refused")); !strings.Contains(te.Detail, "169.254.169.254") {
		t.Errorf("managed identity advice lost: %s", te.Detail)
	}
}

// TestChallengesWarnExplicitScope: an explicit KVPROXY_TOKEN_SCOPE that
// disagrees with the challenge's resource is logged once, naming both.
func TestChallengesWarnExplicitScope(t *testing.T) {
	tests := []struct {
		name, scope, resource string
		warn                  bool
	}{
		{"vault scope, HSM challenge", "https://vault.azure.net/.default", "https://managedhsm.azure.net", true},
		{"agreeing", "https://vault.azure.net/.default", "https://vault.azure.net", false},
		{"agreeing with a trailing slash", "https://vault.azure.net/.default", "https://vault.azure.net/", false},
		{"no resource", "https://vault.azure.net/.default", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := NewChallenges(ChallengeOptions{VaultHost: "contoso.managedhsm.azure.net", Scope: tt.scope, ExplicitScope: true,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			ch := kvwire.Challenge{Authority: "https://login.microsoftonline.com/t1", TenantID: "t1", Resource: tt.resource}
			for range 3 {
				if _, err := c.Observe(ch); err != nil {
					t.Fatal(err)
				}
			}
			n := strings.Count(logs.String(), "KVPROXY_TOKEN_SCOPE disagrees")
			switch {
			case tt.warn && n != 1:
				t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
			case !tt.warn && logs.Len() > 0:
				t.Fatalf("unexpected log:\n%s", logs.String())
			}
			if tt.warn && (!strings.Contains(logs.String(), tt.scope) || !strings.Contains(logs.String(), "https://managedhsm.azure.net/.default")) {
				t.Errorf("the warning must name both scopes:\n%s", logs.String())
			}
		})
	}
}
