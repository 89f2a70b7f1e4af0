package azfake

// These tests drive the fakes with the real azidentity credentials kvproxy
// uses. azidentity (MSAL underneath) keeps ONE managed identity token cache
// per process, keyed by resource and identity: every managed identity test
// asks for a resource of its own (unique per run, for -count=N) so that none
// is served another test's token.

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/uuid"
)

// useIdentityEndpoint points azidentity's managed identity source detection
// at an App Service style endpoint and nothing else.
func useIdentityEndpoint(t *testing.T, endpoint, header string) {
	t.Setenv("IDENTITY_ENDPOINT", endpoint)
	t.Setenv("IDENTITY_HEADER", header)
	for _, v := range []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"} {
		t.Setenv(v, "")
	}
}

func getToken(t *testing.T, cred azcore.TokenCredential, scope string) (azcore.AccessToken, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
}

// uniqueScope returns a scope no other test or run asks for.
func uniqueScope(name string) string {
	return "https://" + name + "-" + uuid.NewString() + ".example/.default"
}

// tokenOrRefusal checks the outcome of GetToken: with wantStatus 0 a token
// the fakes minted, whose claims it returns with true; otherwise a refusal
// with that status whose message contains want.
func tokenOrRefusal(t *testing.T, tok azcore.AccessToken, err error, wantStatus int, want string) (TokenClaims, bool) {
	t.Helper()
	if wantStatus != 0 {
		if err == nil || statusOf(err) != wantStatus || !strings.Contains(err.Error(), want) {
			t.Fatalf("GetToken error = %v (status %d), want %d: %s", err, statusOf(err), wantStatus, want)
		}
		return TokenClaims{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// statusOf returns the HTTP status of an azidentity authentication failure.
func statusOf(err error) int {
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		return afe.RawResponse.StatusCode
	}
	return 0
}

func TestManagedIdentityCredentialSystemAssigned(t *testing.T) {
	s := NewIdentityServer(IdentityOptions{}) // real clock: MSAL checks expiry against time.Now
	endpoint, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	useIdentityEndpoint(t, endpoint, "kvproxy-dev-header")

	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	scope := uniqueScope("system")
	tok, err := getToken(t, cred, scope)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	// azidentity strips "/.default": the endpoint gets, and the token names,
	// the v1 resource.
	if c.Audience != strings.TrimSuffix(scope, "/.default") || c.TenantID != DefaultTenantID || c.ObjectID != DefaultObjectID || c.AppID != DefaultAppID {
		t.Errorf("claims = %+v", c)
	}
	if !tok.ExpiresOn.Equal(c.ExpiresAt) || c.ExpiresAt.Before(before.Add(24*time.Hour)) {
		t.Errorf("ExpiresOn = %v, exp = %v, want about 24h from %v", tok.ExpiresOn, c.ExpiresAt, before)
	}
	// MSAL sets RefreshOn to half the lifetime when the endpoint sends no
	// refresh_in and the token lives more than 2h.
	if half := before.Add(12 * time.Hour); tok.RefreshOn.Before(half.Add(-time.Minute)) || tok.RefreshOn.After(half.Add(time.Minute)) {
		t.Errorf("RefreshOn = %v, want about %v", tok.RefreshOn, half)
	}

	// The second call is served from azidentity's cache.
	again, err := getToken(t, cred, scope)
	if err != nil || again.Token != tok.Token {
		t.Errorf("second GetToken: %v, same token %v", err, again.Token == tok.Token)
	}
	if s.Requests() != 1 || s.Issued() != 1 {
		t.Errorf("Requests %d Issued %d, want 1 and 1", s.Requests(), s.Issued())
	}
}

func TestManagedIdentityCredentialUserAssigned(t *testing.T) {
	const resID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kvproxy"
	s := NewIdentityServer(IdentityOptions{
		Header: "custom-header",
		UserAssigned: map[string]Identity{
			"c0ffee00-0000-0000-0000-000000000001": {ObjectID: "0b1ec700-0000-0000-0000-000000000001", ResourceID: resID},
		},
	})
	endpoint, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	useIdentityEndpoint(t, endpoint, "custom-header")

	tests := []struct {
		name       string
		id         azidentity.ManagedIDKind
		scope      string
		wantStatus int // 0: success
	}{
		{"client id", azidentity.ClientID("c0ffee00-0000-0000-0000-000000000001"), uniqueScope("ua-client"), 0},
		{"object id", azidentity.ObjectID("0b1ec700-0000-0000-0000-000000000001"), uniqueScope("ua-object"), 0},
		{"resource id", azidentity.ResourceID(resID), uniqueScope("ua-resource"), 0},
		{"unknown client id", azidentity.ClientID("c0ffee00-0000-0000-0000-00000000ffff"), uniqueScope("ua-unknown"), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: tt.id})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := getToken(t, cred, tt.scope)
			c, ok := tokenOrRefusal(t, tok, err, tt.wantStatus, "No User Assigned or Delegated Managed Identity found")
			if !ok {
				return
			}
			if c.AppID != "c0ffee00-0000-0000-0000-000000000001" || c.ObjectID != "0b1ec700-0000-0000-0000-000000000001" ||
				c.MIResourceID != resID || c.Audience != strings.TrimSuffix(tt.scope, "/.default") {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}

func TestManagedIdentityTokenOpensTheVault(t *testing.T) {
	s := NewIdentityServer(IdentityOptions{})
	endpoint, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	useIdentityEndpoint(t, endpoint, "kvproxy-dev-header")
	scope := uniqueScope("vault")
	_, u, c := startVault(t, VaultOptions{Now: time.Now, Audience: strings.TrimSuffix(scope, "/.default")})

	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := getToken(t, cred, scope)
	if err != nil {
		t.Fatal(err)
	}
	if s.Issued() != 1 {
		t.Errorf("Issued() = %d, want 1", s.Issued())
	}
	r := do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", tok.Token, "")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "correct-horse-battery-staple") {
		t.Errorf("GET with a managed identity token: %d %s", r.status, r.body)
	}
}

func entraClientOptions(tl *TLS, authority string) azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: authority},
		Transport: &http.Client{Transport: tl.ClientTransport()},
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
}

func TestWorkloadIdentityCredential(t *testing.T) {
	const (
		tenant   = "7e7e7e7e-0000-0000-0000-000000000001"
		clientID = "c11e47c1-0000-0000-0000-000000000001"
		// A service account token; Entra only compares it here.
		federated = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3Zwcm94eTprdnByb3h5In0.c2ln"
		other     = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3RoZXI6c2EifQ.c2ln"
	)
	tl := newTLS(t)
	e := NewEntra(EntraOptions{
		TenantID:       tenant,
		Identity:       Identity{ObjectID: "5e5e5e5e-0000-0000-0000-000000000001", AppID: clientID},
		FederatedToken: federated,
	})
	authority, err := e.Start(tl)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	dir := t.TempDir()
	tests := []struct {
		name, assertion string
		wantErr         bool
	}{
		{"matching assertion", federated, false},
		{"other service account", other, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(file, []byte(tt.assertion), 0o600); err != nil {
				t.Fatal(err)
			}
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				ClientOptions:            entraClientOptions(tl, authority),
				TenantID:                 tenant,
				ClientID:                 clientID,
				TokenFilePath:            file,
				DisableInstanceDiscovery: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := getToken(t, cred, "https://vault.azure.net/.default")
			if tt.wantErr {
				if statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "AADSTS700213") || !strings.Contains(err.Error(), "system:serviceaccount:other:sa") {
					t.Fatalf("GetToken error = %v, want 401 AADSTS700213 naming the subject", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseToken(tok.Token)
			if err != nil {
				t.Fatal(err)
			}
			if c.Audience != "https://vault.azure.net" || c.TenantID != tenant || c.AppID != clientID || c.ObjectID != "5e5e5e5e-0000-0000-0000-000000000001" {
				t.Errorf("claims = %+v", c)
			}
			// Entra sends expires_in: MSAL adds it to its own clock.
			if d := tok.ExpiresOn.Sub(c.ExpiresAt); d < -2*time.Second || d > 2*time.Second {
				t.Errorf("ExpiresOn = %v, exp = %v", tok.ExpiresOn, c.ExpiresAt)
			}
		})
	}
	if got := e.Requests(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
}

func TestClientSecretCredential(t *testing.T) {
	tl := newTLS(t)
	e := NewEntra(EntraOptions{ClientSecret: "correct-secret"})
	authority, err := e.Start(tl)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	tests := []struct {
		name, tenant, secret string
		wantStatus           int // 0: success
		wantText             string
	}{
		{"right secret", DefaultTenantID, "correct-secret", 0, ""},
		{"wrong secret", DefaultTenantID, "wrong-secret", http.StatusUnauthorized, "AADSTS7000215"},
		{"unknown tenant", "0e0e0e0e-0000-0000-0000-000000000001", "correct-secret", http.StatusBadRequest, "AADSTS90002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := azidentity.NewClientSecretCredential(tt.tenant, DefaultAppID, tt.secret, &azidentity.ClientSecretCredentialOptions{
				ClientOptions:            entraClientOptions(tl, authority),
				DisableInstanceDiscovery: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := getToken(t, cred, "https://vault.azure.net/.default")
			if tt.wantStatus != 0 {
				// An unknown tenant fails at the OpenID configuration, a
				// refused secret at the token endpoint.
				if err == nil || statusOf(err) != tt.wantStatus || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("GetToken error = %v (status %d), want %d %s", err, statusOf(err), tt.wantStatus, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseToken(tok.Token)
			if err != nil || c.Audience != "https://vault.azure.net" || c.AppID != DefaultAppID || c.TenantID != DefaultTenantID {
				t.Errorf("claims = %+v (%v)", c, err)
			}
		})
	}
}
