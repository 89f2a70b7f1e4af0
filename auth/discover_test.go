package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
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

func TestDiscoveryLearn(t *testing.T) {
	tests := []struct {
		name       string
		host       string
		explicit   bool
		resource   string
		wantErr    bool
		wantTenant string
	}{
		{name: "vault resource", host: "myvault.vault.azure.net", resource: "https://vault.azure.net", wantTenant: "t1"},
		{name: "hostile resource refused", host: "myvault.vault.azure.net", resource: "https://management.azure.com", wantErr: true},
		{name: "look-alike host refused", host: "myvault.vault.azure.net.evil.example", resource: "https://vault.azure.net", wantErr: true},
		{name: "http resource refused", host: "myvault.vault.azure.net", resource: "http://vault.azure.net", wantErr: true},
		{name: "explicit scope skips the check", host: "127.0.0.1:8443", explicit: true, resource: "https://vault.azure.net", wantTenant: "t1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDiscovery(tt.host, tt.explicit)
			_, err := d.Learn(Challenge{Authority: "https://login.microsoftonline.com/t1", TenantID: "t1", Resource: tt.resource})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, ErrChallengeRefused) {
				t.Errorf("error %v is not ErrChallengeRefused", err)
			}
			if d.Tenant() != tt.wantTenant {
				t.Errorf("tenant %q, want %q (a refused challenge teaches nothing)", d.Tenant(), tt.wantTenant)
			}
		})
	}
}
