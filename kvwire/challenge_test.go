package kvwire

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// caeChallenge is a continuous access evaluation challenge in the shape
// Key Vault sends (learn.microsoft.com/entra/identity-platform/claims-challenge); its claims decode to
// {"access_token":{"nbf":{"essential":true, "value":"1726258122"}}}.
const caeChallenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTcyNjI1ODEyMiJ9fX0="`

func TestParseChallenge(t *testing.T) {
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	const claimsJSON = `{"access_token":{"nbf":{"essential":true, "value":"1726258122"}}}`
	tests := []struct {
		name   string
		header string
		want   Challenge
	}{
		{
			name:   "Key Vault challenge (Key Vault authentication docs)",
			header: `Bearer authorization="https://login.microsoftonline.com/` + tenant + `", resource="https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/" + tenant, TenantID: tenant, Resource: "https://vault.azure.net"},
		},
		{
			// Azure/azure-sdk-for-python#27266, a 401 logged by a Function App.
			name:   "login.windows.net authority",
			header: `Bearer authorization="https://login.windows.net/af8bf9d1-b1a5-44d4-9656-158f8e04c92e", resource="https://vault.azure.net"`,
			want: Challenge{Authority: "https://login.windows.net/af8bf9d1-b1a5-44d4-9656-158f8e04c92e",
				TenantID: "af8bf9d1-b1a5-44d4-9656-158f8e04c92e", Resource: "https://vault.azure.net"},
		},
		{
			name:   "CAE insufficient_claims",
			header: caeChallenge,
			want: Challenge{Authority: "https://login.microsoftonline.com/common/oauth2/authorize", TenantID: "common",
				Error: "insufficient_claims", Claims: claimsJSON},
		},
		{
			name:   "authorization wins over authorization_uri",
			header: `Bearer authorization_uri="https://login.microsoftonline.com/b/oauth2/authorize", authorization="https://login.microsoftonline.com/a"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/a", TenantID: "a"},
		},
		{
			name:   "authority without a path",
			header: `Bearer authorization="https://login.microsoftonline.com", resource="https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com", Resource: "https://vault.azure.net"},
		},
		{
			name:   "authority with only a slash",
			header: `Bearer authorization="https://login.microsoftonline.com/", resource="https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/", Resource: "https://vault.azure.net"},
		},
		{
			name:   "authority without a scheme",
			header: `Bearer authorization="login.microsoftonline.com/contoso.onmicrosoft.com"`,
			want:   Challenge{Authority: "login.microsoftonline.com/contoso.onmicrosoft.com", TenantID: "contoso.onmicrosoft.com"},
		},
		{
			name:   "dSTS authority names the tenant second",
			header: `Bearer authorization="https://co2agg04-dsts.dsts.core.azure-test.net/dstsv2/7a433bfc-2514-4697-b467-e0933190487f", resource="https://vault.azure.net"`,
			want: Challenge{Authority: "https://co2agg04-dsts.dsts.core.azure-test.net/dstsv2/7a433bfc-2514-4697-b467-e0933190487f",
				TenantID: "7a433bfc-2514-4697-b467-e0933190487f", Resource: "https://vault.azure.net"},
		},
		{
			name:   "authority whose first segment is no tenant",
			header: `Bearer authorization="https://login.example/te%20nant;x/"`,
			want:   Challenge{Authority: "https://login.example/te%20nant;x/"},
		},
		{
			name:   "unparsable authority",
			header: `Bearer authorization="https://[::1/tenant"`,
			want:   Challenge{Authority: "https://[::1/tenant"},
		},
		{
			name:   "unquoted values",
			header: `Bearer authorization=https://login.microsoftonline.com/` + tenant + `, resource=https://vault.azure.net`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/" + tenant, TenantID: tenant, Resource: "https://vault.azure.net"},
		},
		{
			name:   "space-separated parameters and scope",
			header: `Bearer authorization="https://login.microsoftonline.com/t" scope="https://vault.azure.net/.default" resource="https://ignored"`,
			want: Challenge{Authority: "https://login.microsoftonline.com/t", TenantID: "t",
				Scope: "https://vault.azure.net/.default", Resource: "https://ignored"},
		},
		{
			name:   "case-insensitive scheme and keys, spaces around =",
			header: `bEaReR  AUTHORIZATION = "https://login.microsoftonline.com/t" ,Resource= "https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/t", TenantID: "t", Resource: "https://vault.azure.net"},
		},
		{
			name:   "backslash escapes",
			header: `Bearer realm="a \"quoted\" realm, with comma", error="back\\slash", resource="https://vault.azure.net"`,
			want:   Challenge{Error: `back\slash`, Resource: "https://vault.azure.net"},
		},
		{
			name:   "first of a repeated key counts",
			header: `Bearer resource="https://vault.azure.net", resource="https://evil.example"`,
			want:   Challenge{Resource: "https://vault.azure.net"},
		},
		{
			name:   "other schemes first",
			header: `Basic realm="kv", Negotiate YIIBgwYGKwYBBQUCoIIBdzCCAXOgMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCg==, Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/t", TenantID: "t", Resource: "https://vault.azure.net"},
		},
		{
			name:   "token68 without padding",
			header: `Negotiate abcdef, Bearer resource="https://vault.azure.net"`,
			want:   Challenge{Resource: "https://vault.azure.net"},
		},
		{
			name:   "PoP challenge before Bearer; its parameters are not taken",
			header: `PoP realm="", authorization="https://login.microsoftonline.com/pop", nonce="abc", Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/t", TenantID: "t", Resource: "https://vault.azure.net"},
		},
		{
			name:   "first of two Bearer challenges",
			header: `Bearer authorization="https://login.microsoftonline.com/t1", resource="https://vault.azure.net", Bearer authorization="https://login.microsoftonline.com/t2"`,
			want:   Challenge{Authority: "https://login.microsoftonline.com/t1", TenantID: "t1", Resource: "https://vault.azure.net"},
		},
		{
			name:   "Bearer followed by another scheme",
			header: `Bearer resource="https://vault.azure.net", Basic realm="x"`,
			want:   Challenge{Resource: "https://vault.azure.net"},
		},
		{
			name:   "bare Bearer",
			header: `Bearer`,
			want:   Challenge{},
		},
		{
			name:   "junk around parameters",
			header: `  ,, Bearer "x" ==, = resource="https://vault.azure.net",,`,
			want:   Challenge{Resource: "https://vault.azure.net"},
		},
		{
			name:   "unterminated quote runs to the end",
			header: `Bearer resource="https://vault.azure.net`,
			want:   Challenge{Resource: "https://vault.azure.net"},
		},
		{
			name:   "unquoted base64url claims without padding",
			header: `Bearer error=insufficient_claims, claims=` + base64.RawURLEncoding.EncodeToString([]byte(`{"access_token":{"xms_cc":{"values":["cp1"]}}}`)),
			want:   Challenge{Error: "insufficient_claims", Claims: `{"access_token":{"xms_cc":{"values":["cp1"]}}}`},
		},
		{
			name:   "unquoted padded claims",
			header: `Bearer error=insufficient_claims, claims=eyJhIjoxfQ==`,
			want:   Challenge{Error: "insufficient_claims", Claims: `{"a":1}`},
		},
		{
			name:   "empty claims",
			header: `Bearer error="insufficient_claims", claims=""`,
			want:   Challenge{Error: "insufficient_claims"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseChallenge(tt.header)
			if err != nil {
				t.Fatalf("ParseChallenge: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseChallenge =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseChallengeErrors(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"empty", "", "no Bearer challenge"},
		{"garbage", `!!"==,,=`, "no Bearer challenge"},
		{"another scheme only", `Basic realm="vault"`, "no Bearer challenge"},
		{"Bearer as a parameter name", `Basic bearer="x"`, "no Bearer challenge"},
		{"scheme named like Bearer", `Bearerx realm="x"`, "no Bearer challenge"},
		{"claims not base64", `Bearer error="insufficient_claims", claims="%%%"`, "not base64-encoded JSON"},
		{"claims not JSON", `Bearer error="insufficient_claims", claims="dGVzdGluZzE="`, "not base64-encoded JSON"},
		{"too long", "Bearer realm=\"" + strings.Repeat("a", maxChallengeLen) + `"`, "more than the 16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseChallenge(tt.header)
			if err == nil {
				t.Fatalf("ParseChallenge = %+v, want an error", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestChallengeTokenScope(t *testing.T) {
	tests := []struct {
		name    string
		c       Challenge
		want    string
		wantErr bool
	}{
		{name: "scope with /.default", c: Challenge{Scope: "https://vault.azure.net/.default"}, want: "https://vault.azure.net/.default"},
		{name: "bare scope", c: Challenge{Scope: "https://vault.azure.net"}, want: "https://vault.azure.net/.default"},
		{name: "bare scope with trailing slash", c: Challenge{Scope: "https://vault.azure.net/"}, want: "https://vault.azure.net/.default"},
		{name: "resource", c: Challenge{Resource: "https://vault.azure.net"}, want: "https://vault.azure.net/.default"},
		{name: "resource with trailing slash", c: Challenge{Resource: "https://vault.azure.net/"}, want: "https://vault.azure.net/.default"},
		{name: "only one slash is stripped", c: Challenge{Resource: "https://vault.azure.net//"}, want: "https://vault.azure.net//.default"},
		{name: "Managed HSM resource", c: Challenge{Resource: "https://managedhsm.azure.net"}, want: "https://managedhsm.azure.net/.default"},
		{name: "scope wins over resource", c: Challenge{Scope: "https://vault.azure.cn/.default", Resource: "https://vault.azure.net"}, want: "https://vault.azure.cn/.default"},
		{name: "neither", c: Challenge{Authority: "https://login.microsoftonline.com/t"}, wantErr: true},
		{name: "blank", c: Challenge{Resource: "  "}, wantErr: true},
		{name: "slash only", c: Challenge{Resource: "/"}, wantErr: true},
		{name: "default only", c: Challenge{Scope: "/.default"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.TokenScope()
			if (err != nil) != tt.wantErr {
				t.Fatalf("TokenScope = %q, %v; want error %v", got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("TokenScope = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestVerifyChallengeScope(t *testing.T) {
	tests := []struct {
		name, vault, scope string
		ok                 bool
	}{
		// The Azure SDK's own cases (challenge_policy_test.go: vault 42.vault.azure.net).
		{"resource is the vault's parent", "42.vault.azure.net", "https://vault.azure.net", true},
		{"scope is the vault's parent", "42.vault.azure.net", "https://vault.azure.net/.default", true},
		{"other cloud", "42.vault.azure.net", "https://vault.azure.cn", false},
		{"sibling domain", "42.vault.azure.net", "https://myvault.azure.net", false},
		{"sibling domain scope", "42.vault.azure.net/", "https://myvault.azure.net/.default", false},
		// Consequences of "vault host ends with . + resource host".
		{"grandparent domain", "myvault.vault.azure.net", "https://azure.net", true},
		{"resource equal to the vault host", "vault.azure.net", "https://vault.azure.net", false},
		{"vault under a hostile domain", "myvault.vault.azure.net.evil.com", "https://vault.azure.net", false},
		{"hostile domain's own parent", "myvault.vault.azure.net.evil.com", "https://evil.com", true},
		{"suffix without a dot boundary", "evilvault.azure.net", "https://vault.azure.net", false},
		{"Managed HSM", "myhsm.managedhsm.azure.net", "https://managedhsm.azure.net/.default", true},
		{"Key Vault scope for a Managed HSM", "myhsm.managedhsm.azure.net", "https://vault.azure.net/.default", false},
		{"US Gov", "myvault.vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net", true},
		{"hosts compare case-insensitively", "MyVault.Vault.Azure.NET", "https://VAULT.azure.net/.default", true},
		{"port on the vault host only", "myvault.vault.azure.net:443", "https://vault.azure.net", false},
		{"same port on both", "myvault.vault.localhost:8443", "https://vault.localhost:8443", true},
		// Refused whatever the host.
		{"http", "myvault.vault.azure.net", "http://vault.azure.net", false},
		{"no scheme", "myvault.vault.azure.net", "vault.azure.net", false},
		{"user information", "myvault.vault.azure.net", "https://evil.com@vault.azure.net", false},
		{"empty scope", "myvault.vault.azure.net", "", false},
		{"empty vault", "", "https://vault.azure.net", false},
		{"unparsable", "myvault.vault.azure.net", "https://[vault.azure.net", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyChallengeScope(tt.vault, tt.scope)
			if (err == nil) != tt.ok {
				t.Fatalf("VerifyChallengeScope(%q, %q) = %v, want ok %v", tt.vault, tt.scope, err, tt.ok)
			}
			if err != nil && tt.vault != "" && (!strings.Contains(err.Error(), strings.ToLower(tt.vault)) || !strings.Contains(err.Error(), tt.scope)) {
				t.Errorf("error %q names neither the vault %q and the scope %q", err, tt.vault, tt.scope)
			}
		})
	}
	err := VerifyChallengeScope("myvault.vault.azure.net", "https://evil.example/.default")
	if err == nil || !strings.Contains(err.Error(), "vault.azure.net)") || !strings.Contains(err.Error(), "host evil.example") {
		t.Errorf("error %v should say what was expected (vault.azure.net) and what was asked (evil.example)", err)
	}
}

func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		caeChallenge,
		`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`,
		`Bearer authorization="https://login.microsoftonline.com", scope="https://vault.azure.net/.default"`,
		`Basic realm="kv", Negotiate YIIB==, Bearer authorization=https://login/t resource=https://vault.azure.net`,
		`Bearer realm="a \"b\" c\\", claims=eyJhIjoxfQ`,
		`Bearer authorization="dstsv2", authorization_uri="//x/dstsv2/"`,
		`Bearer = " , ==`,
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		c, err := ParseChallenge(header)
		if err != nil {
			// Only a bad claims parameter leaves the rest readable.
			if c != (Challenge{}) && (c.Claims != "" || !strings.Contains(err.Error(), "claims")) {
				t.Fatalf("error %v with challenge %+v", err, c)
			}
			if c == (Challenge{}) {
				return
			}
		}
		if c.TenantID != "" && c.Authority == "" {
			t.Fatalf("TenantID %q without Authority", c.TenantID)
		}
		if c.TenantID != "" && !challengeTenantLike(c.TenantID) {
			t.Fatalf("TenantID %q has characters no tenant has", c.TenantID)
		}
		if c.Claims != "" && !json.Valid([]byte(c.Claims)) {
			t.Fatalf("Claims %q is not JSON", c.Claims)
		}
		if scope, err := c.TokenScope(); err == nil {
			if !strings.HasSuffix(scope, "/.default") || scope == "/.default" {
				t.Fatalf("TokenScope = %q", scope)
			}
			_ = VerifyChallengeScope("myvault.vault.azure.net", scope)
		}
	})
}

// A claims parameter that is not base64 JSON fails the parse, but leaves
// the rest readable for a diagnosis.
func TestParseChallengeBadClaimsKeepsTheRest(t *testing.T) {
	c, err := ParseChallenge(`Bearer authorization="https://login.microsoftonline.com/t1", resource="https://vault.azure.net", error="insufficient_claims", claims="%%%"`)
	if err == nil {
		t.Fatal("want an error for the claims")
	}
	if c.TenantID != "t1" || c.Resource != "https://vault.azure.net" || c.Error != "insufficient_claims" || c.Claims != "" {
		t.Errorf("challenge %+v", c)
	}
}
