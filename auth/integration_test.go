package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/uuid"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// uniqueScope avoids azidentity's process-wide managed identity token
// cache, which would otherwise hand one test's token to another.
func uniqueScope() string {
	return "https://" + strings.ReplaceAll(uuid.NewString(), "-", "") + ".vault.azure.net/.default"
}

func startIdentity(t *testing.T, o azfake.IdentityOptions) *azfake.IdentityServer {
	t.Helper()
	ids := azfake.NewIdentityServer(o)
	u, err := ids.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ids.Close() })
	t.Setenv("IDENTITY_ENDPOINT", u)
	t.Setenv("IDENTITY_HEADER", o.Header)
	return ids
}

func TestManagedIdentityColdCacheOneEndpointRequest(t *testing.T) {
	faults := new(azfake.IdentityFaults)
	ids := startIdentity(t, azfake.IdentityOptions{Header: "secret-header", Faults: faults})
	cred, desc, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity, IdentityEndpoint: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "system-assigned") {
		t.Errorf("description %q", desc)
	}
	// The requests wait as long as the endpoint is held, however long
	// starting 200 goroutines takes.
	c := NewCache(CacheOptions{Credential: cred, Scope: uniqueScope(), MaxWait: time.Minute})
	release := faults.Hold()
	const n = 200
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tok, err := c.Token(ctx)
			if err == nil && tok.Token == "" {
				err = errors.New("empty token")
			}
			results <- err
		}()
	}
	waitFor(t, func() bool { return faults.Waiting() >= 1 })
	release()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := ids.Requests(); got != 1 {
		t.Fatalf("identity endpoint received %d requests for %d concurrent cold requests, want 1", got, n)
	}
	claims, ok := c.Claims()
	if !ok || claims.ObjectID != azfake.DefaultObjectID || claims.TenantID != azfake.DefaultTenantID {
		t.Errorf("claims %+v", claims)
	}
}

func TestManagedIdentityUnassignedIdentityIsDescribed(t *testing.T) {
	startIdentity(t, azfake.IdentityOptions{Header: "h"})
	cred, _, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity, ClientID: "not-assigned",
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(CacheOptions{Credential: cred, Scope: uniqueScope()})
	_, err = c.Token(context.Background())
	var te *TokenError
	if !errors.As(err, &te) || te.Reason != ReasonNotAssigned {
		t.Fatalf("got %v, want a %s TokenError", err, ReasonNotAssigned)
	}
	if !strings.Contains(te.Detail, "KVPROXY_IDENTITY_CLIENT_ID") {
		t.Errorf("detail does not say what to fix: %s", te.Detail)
	}
}

func TestManagedIdentityUnreachableIsDescribed(t *testing.T) {
	ids := startIdentity(t, azfake.IdentityOptions{Header: "h"})
	ids.Close()
	cred, _, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity,
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewCache(CacheOptions{Credential: cred, Scope: uniqueScope()}).Token(context.Background())
	var te *TokenError
	if !errors.As(err, &te) || te.Reason != ReasonUnreachable {
		t.Fatalf("got %v, want %s", err, ReasonUnreachable)
	}
}

func TestWorkloadIdentityThroughEntraStandIn(t *testing.T) {
	certs, err := azfake.NewTLS()
	if err != nil {
		t.Fatal(err)
	}
	entra := azfake.NewEntra(azfake.EntraOptions{FederatedToken: "projected-sa-token"})
	authority, err := entra.Start(certs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { entra.Close() })
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	opts := CredentialOptions{Kind: KindWorkloadIdentity, ClientID: azfake.DefaultAppID, TenantID: azfake.DefaultTenantID,
		TokenFile: file, AuthorityHost: authority, DisableInstanceDiscovery: true,
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: certs.ClientTransport()}, Retry: policy.RetryOptions{MaxRetries: -1}}}

	t.Run("missing token file", func(t *testing.T) {
		cred, _, err := NewCredential(opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"}).Token(context.Background())
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != ReasonTokenFile {
			t.Fatalf("got %v, want %s", err, ReasonTokenFile)
		}
	})
	t.Run("federated token accepted", func(t *testing.T) {
		if err := os.WriteFile(file, []byte("projected-sa-token"), 0o600); err != nil {
			t.Fatal(err)
		}
		cred, desc, err := NewCredential(opts)
		if err != nil {
			t.Fatal(err)
		}
		c := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default", TenantID: azfake.DefaultTenantID})
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		cl, _ := c.Claims()
		if cl.AppID != azfake.DefaultAppID || cl.Audience != "https://vault.azure.net" {
			t.Errorf("claims %+v", cl)
		}
		if !strings.Contains(desc, "workload identity") || strings.Contains(desc, "projected-sa-token") {
			t.Errorf("description %q", desc)
		}
	})
	t.Run("wrong federated token rejected with a fix", func(t *testing.T) {
		os.WriteFile(file, []byte("another-token"), 0o600) //nolint:errcheck
		cred, _, _ := NewCredential(opts)
		_, err := NewCache(CacheOptions{Credential: cred, Scope: "https://vault.azure.net/.default"}).Token(context.Background())
		var te *TokenError
		if !errors.As(err, &te) || !strings.Contains(te.Detail, "federated credential") {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(te.Error(), "another-token") {
			t.Fatal("the federated token leaked into the error")
		}
	})
}

func TestCredentialConfigurationErrors(t *testing.T) {
	tests := []struct {
		name string
		o    CredentialOptions
		want string
	}{
		{name: "workload identity without anything", o: CredentialOptions{Kind: KindWorkloadIdentity}, want: "AZURE_TENANT_ID"},
		{name: "client secret without secret", o: CredentialOptions{Kind: KindClientSecret, ClientID: "c", TenantID: "t"}, want: "AZURE_CLIENT_SECRET"},
		{name: "unknown kind", o: CredentialOptions{Kind: "magic"}, want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := NewCredential(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want mention of %s", err, tt.want)
			}
		})
	}
}

func TestDescribeRedactsTokens(t *testing.T) {
	tok := azfake.MintToken(azfake.TokenClaims{TenantID: "t"})
	te := Describe(fmt.Errorf("weird failure with %s inside", tok))
	if strings.Contains(te.Detail, tok) || strings.Contains(te.Error(), tok[:40]) {
		t.Fatalf("token leaked: %s", te.Detail)
	}
}
