package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// TestUserAssignedManagedIdentity selects a user-assigned identity by client
// ID, through KVPROXY_IDENTITY_CLIENT_ID or AZURE_CLIENT_ID.
func TestUserAssignedManagedIdentity(t *testing.T) {
	t.Parallel()
	const uami = "77777777-6666-5555-4444-333333333333"
	const uamiOID = "12121212-3434-5656-7878-909090909090"
	tests := []struct {
		name    string
		env     map[string]string
		wantApp string // "" when no token can be had
	}{
		{name: "KVPROXY_IDENTITY_CLIENT_ID", env: map[string]string{"KVPROXY_IDENTITY_CLIENT_ID": uami}, wantApp: uami},
		{name: "AZURE_CLIENT_ID under auto", env: map[string]string{"KVPROXY_CREDENTIAL": "auto", "AZURE_CLIENT_ID": uami}, wantApp: uami},
		{name: "system-assigned", env: nil, wantApp: azfake.DefaultAppID},
		{name: "identity not assigned", env: map[string]string{"KVPROXY_IDENTITY_CLIENT_ID": "00000000-1111-2222-3333-444444444444"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{
				UserAssigned: map[string]azfake.Identity{uami: {ObjectID: uamiOID}},
			})
			p := startKV(t, f, tc.env)
			if tc.wantApp == "" {
				r := p.get(t, "/secrets/db-password")
				e := checkRefusal(t, r, http.StatusServiceUnavailable, "token-unavailable")
				if d := e.Kvproxy.Detail; !strings.Contains(d, "not assigned") || !strings.Contains(d, "KVPROXY_IDENTITY_CLIENT_ID") {
					t.Errorf("detail %q does not say the identity is not assigned and how to fix it", d)
				}
				if n := len(f.Vault.Requests()); n != 0 {
					t.Errorf("the vault received %d requests", n)
				}
				return
			}
			p.waitReady(t, 20*time.Second)
			decodeSecret(t, p.get(t, "/secrets/db-password"))
			reqs := tokenRequests(f.Vault)
			if len(reqs) != 1 || reqs[0].Claims == nil || reqs[0].Claims.AppID != tc.wantApp {
				t.Fatalf("vault requests %+v, want one with a token for appid %s", reqs, tc.wantApp)
			}
		})
	}
}

// TestClientSecret gets tokens from the Entra stand-in with a client secret,
// which must never be logged.
func TestClientSecret(t *testing.T) {
	t.Parallel()
	const clientID = "5a5a5a5a-6b6b-7c7c-8d8d-9e9e9e9e9e9e"
	const secret = "app-registration-secret-Qx7~v"
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{name: "right secret", secret: secret, ok: true},
		{name: "wrong secret", secret: "an-expired-secret-Zz9~q"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
			entra := azfaketest.StartEntra(t, f.TLS, azfake.EntraOptions{Identity: azfake.Identity{ObjectID: azfake.DefaultObjectID, AppID: clientID}, ClientSecret: secret})
			p := startKV(t, f, map[string]string{
				"KVPROXY_CREDENTIAL":                 "auto", // AZURE_CLIENT_SECRET selects client-secret
				"AZURE_AUTHORITY_HOST":               entra.Authority,
				"AZURE_TENANT_ID":                    azfake.DefaultTenantID,
				"AZURE_CLIENT_ID":                    clientID,
				"AZURE_CLIENT_SECRET":                tc.secret,
				"KVPROXY_DISABLE_INSTANCE_DISCOVERY": "true",
				"KVPROXY_LOG_LEVEL":                  "debug",
			})
			if tc.ok {
				p.waitReady(t, 20*time.Second)
				decodeSecret(t, p.get(t, "/secrets/db-password"))
				reqs := tokenRequests(f.Vault)
				if len(reqs) != 1 || reqs[0].Claims == nil || reqs[0].Claims.AppID != clientID {
					t.Fatalf("vault requests %+v, want one with a token for appid %s", reqs, clientID)
				}
			} else {
				r := p.get(t, "/secrets/db-password")
				e := checkRefusal(t, r, http.StatusServiceUnavailable, "token-unavailable")
				if !strings.Contains(e.Kvproxy.Detail, "client secret") {
					t.Errorf("detail %q does not say the client secret was rejected", e.Kvproxy.Detail)
				}
				if strings.Contains(string(r.Body), tc.secret) {
					t.Error("the answer contains the client secret")
				}
			}
			if n := f.IDs.Requests(); n != 0 {
				t.Errorf("the managed identity endpoint received %d requests", n)
			}
			if l := p.waitLog(t, func(l logLine) bool { return l.Msg() == "kvproxy started" }, time.Second, "start-up"); l.Str("credential") != "client-secret" {
				t.Errorf("auto chose %q, want client-secret", l.Str("credential"))
			}
			if strings.Contains(p.stderr.String(), tc.secret) {
				t.Error("stderr contains the client secret")
			}
		})
	}
}
