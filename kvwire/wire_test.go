package kvwire

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestReadersAgree holds the cases where kvproxy once had two readers of one
// format that gave different answers; now there is one, and these pin it.
func TestReadersAgree(t *testing.T) {
	// Bearer is chosen whatever scheme comes first.
	c, err := ParseChallenge(`PoP authorization="https://login.microsoftonline.com/evil", Bearer authorization="https://login.microsoftonline.com/good", resource="https://vault.azure.net"`)
	if err != nil {
		t.Fatal(err)
	}
	if c.TenantID != "good" {
		t.Errorf("tenant of a PoP-then-Bearer challenge = %q, want good", c.TenantID)
	}
	// dSTS authorities name the tenant second.
	if got := TenantFromAuthority("https://login.example.net/dstsv2/tenant-x"); got != "tenant-x" {
		t.Errorf("dstsv2 authority tenant = %q, want tenant-x", got)
	}
}

func TestTenantFromAuthority(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
		{"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
		{"https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0", "contoso.onmicrosoft.com"},
		{"login.microsoftonline.com/t1", "t1"},
		{"https://login.microsoftonline.com/common/oauth2/authorize", "common"},
		{"https://contoso.b2clogin.com/tfp/contoso.onmicrosoft.com/B2C_1_signin", "contoso.onmicrosoft.com"},
		{"https://login.example.net/dstsv2/", ""},
		{"https://adfs.contoso.com/adfs", ""},
		{"https://login.microsoftonline.com", ""},
		{"https://login.microsoftonline.com/a%2Fb", ""},
		{"https://login.microsoftonline.com/<script>", ""},
		{"", ""},
		{"::::", ""},
	}
	for _, tt := range tests {
		if got := TenantFromAuthority(tt.in); got != tt.want {
			t.Errorf("TenantFromAuthority(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsTenantID(t *testing.T) {
	for s, want := range map[string]bool{
		"72f988bf-86f1-41af-91ab-2d7cd011db47": true,
		"72F988BF-86F1-41AF-91AB-2D7CD011DB47": true,
		"common":                               false,
		"organizations":                        false,
		"XXX":                                  false,
		"ee4XXXXXXXXd6":                        false,
		"72f988bf-86f1-41af-91ab-2d7cd011db4x": false,
		"72f988bf086f1-41af-91ab-2d7cd011db47": false,
	} {
		if got := IsTenantID(s); got != want {
			t.Errorf("IsTenantID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestLookupHost(t *testing.T) {
	tests := []struct {
		host        string
		ok, hsm     bool
		scope, zone string
	}{
		{"myvault.vault.azure.net", true, false, "https://vault.azure.net/.default", "privatelink.vaultcore.azure.net"},
		{"MyVault.Vault.Azure.Net.", true, false, "https://vault.azure.net/.default", "privatelink.vaultcore.azure.net"},
		{"myvault.vault.azure.net:443", true, false, "https://vault.azure.net/.default", "privatelink.vaultcore.azure.net"},
		{"myhsm.managedhsm.azure.net", true, true, "https://managedhsm.azure.net/.default", "privatelink.managedhsm.azure.net"},
		{"v.vault.azure.cn", true, false, "https://vault.azure.cn/.default", "privatelink.vaultcore.azure.cn"},
		{"h.managedhsm.usgovcloudapi.net", true, true, "https://managedhsm.usgovcloudapi.net/.default", "privatelink.managedhsm.usgovcloudapi.net"},
		{"vault.azure.net", false, false, "", ""},
		{"myvault.vault.azure.com", false, false, "", ""},
		{"myvault.vault.azure.net.evil.example", false, false, "", ""},
		{"127.0.0.1:8443", false, false, "", ""},
	}
	for _, tt := range tests {
		s, ok := LookupHost(tt.host)
		if ok != tt.ok || s.ManagedHSM != tt.hsm || s.Scope != tt.scope || s.PrivateZone != tt.zone {
			t.Errorf("LookupHost(%q) = %+v, %v", tt.host, s, ok)
		}
		if ok && s.Resource()+"/.default" != s.Scope {
			t.Errorf("%q: resource %q does not match scope %q", tt.host, s.Resource(), s.Scope)
		}
	}
	if !IsManagedHSM("x.managedhsm.example") || IsManagedHSM("x.vault.azure.net") {
		t.Error("IsManagedHSM")
	}
	for _, s := range Services() {
		if err := ValidateScope(s.Scope); err != nil {
			t.Errorf("cloud table scope %q: %v", s.Scope, err)
		}
	}
}

func TestValidateScope(t *testing.T) {
	for scope, ok := range map[string]bool{
		"https://vault.azure.net/.default":      true,
		"https://vault.azure.net//.default":     false,
		"https://vault.azure.net":               false,
		"http://vault.azure.net/.default":       false,
		"https://u@vault.azure.net/.default":    false,
		"https://vault.azure.net?x=1/.default":  false,
		"https:///.default":                     false,
		"https://management.azure.com/.default": true, // well-formed; which resource is config's business
	} {
		if err := ValidateScope(scope); (err == nil) != ok {
			t.Errorf("ValidateScope(%q) = %v, want ok=%v", scope, err, ok)
		}
	}
}

func TestRedact(t *testing.T) {
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ0In0.c2lnbmF0dXJl"
	long := strings.Repeat("aB3-_", 20)
	std := strings.Repeat("aB3+/", 20) + "=="
	rid := "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-resource-group/providers/Microsoft.KeyVault/vaults/my-vault"
	tests := []struct{ in, want string }{
		{"token " + jwt + " end", "token [REDACTED] end"},
		{"cut " + jwt[:30], "cut [REDACTED]"},
		{"opaque " + long, "opaque [REDACTED]"},
		{"std " + std, "std [REDACTED]"},
		{"Resource: '" + rid + "'", "Resource: '" + rid + "'"},
		{"short words stay", "short words stay"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := RedactToken("echo: opaque-token-1234 and again opaque-token-1234", "opaque-token-1234"); strings.Contains(got, "opaque-token") {
		t.Errorf("RedactToken left the token: %q", got)
	}
	if got := RedactToken("a b c", "b"); got != "a b c" {
		t.Errorf("RedactToken with a short token changed the text: %q", got)
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ0In0.c2lnbmF0dXJl", "tok")
	f.Add(strings.Repeat("a", 100), "aaaaaaaaaa")
	f.Fuzz(func(t *testing.T, s, token string) {
		out := RedactToken(s, token)
		if len(token) >= 8 && strings.Contains(out, token) && !strings.Contains(Redacted, token) {
			// Replacement can create the token anew only from the marker itself.
			if strings.Contains(strings.ReplaceAll(out, Redacted, ""), token) {
				t.Fatalf("token survives in %q", out)
			}
		}
		if tokenShape.MatchString(strings.ReplaceAll(out, Redacted, " ")) {
			t.Fatalf("token shape survives in %q", out)
		}
	})
}

func TestParseVaultError(t *testing.T) {
	tests := []struct {
		name, body string
		want       VaultError
	}{
		{"whole", `{"error":{"code":"Forbidden","message":"Caller is not authorized.","innererror":{"code":"ForbiddenByRbac"}}}`,
			VaultError{Code: "Forbidden", InnerCode: "ForbiddenByRbac", Message: "Caller is not authorized.", JSON: true}},
		{"no innererror", `{"error":{"code":"AccessDenied","message":"Not authorized"}}`,
			VaultError{Code: "AccessDenied", Message: "Not authorized", JSON: true}},
		{"odd types", `{"error":{"code":7,"message":["x"],"innererror":{"code":null}}}`, VaultError{JSON: true}},
		{"truncated", `{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer. Expected one of https://sts.win`,
			VaultError{Code: "Unauthorized", Message: "AKV10032: Invalid issuer. Expected one of https://sts.win"}},
		{"truncated inner only", `{"error":{"innererror":{"code":"ForbiddenByFirewall"`, VaultError{InnerCode: "ForbiddenByFirewall"}},
		{"cut escape", `{"error":{"message":"line\r\nnext \u00`, VaultError{Message: "line\r\nnext "}},
		{"html", "<html><body>403 Forbidden</body></html>\n", VaultError{Raw: "<html><body>403 Forbidden</body></html>"}},
		{"empty", "", VaultError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseVaultError([]byte(tt.body)); got != tt.want {
				t.Errorf("ParseVaultError = %+v, want %+v", got, tt.want)
			}
		})
	}
	e := VaultError{Code: "Forbidden", InnerCode: "ForbiddenByPolicy"}
	if !e.Is("forbiddenbypolicy") || !e.Is("Forbidden") || e.Is("ForbiddenByRbac") {
		t.Error("VaultError.Is")
	}
	if got := (VaultError{Raw: strings.Repeat("x", 20<<10)}).Text(); len(got) != maxMessage {
		t.Errorf("Text is %d bytes, want %d", len(got), maxMessage)
	}
}

func FuzzParseVaultError(f *testing.F) {
	f.Add([]byte(`{"error":{"code":"Forbidden","message":"m","innererror":{"code":"ForbiddenByRbac"}}}`))
	f.Add([]byte(`{"error":{"message":"\u00`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e := ParseVaultError(body)
		if len(e.Raw) > 4096 || len(e.Text()) > maxMessage {
			t.Fatalf("unbounded: raw %d text %d", len(e.Raw), len(e.Text()))
		}
		if e.Raw != "" && (e.Code != "" || e.InnerCode != "" || e.Message != "") {
			t.Fatalf("raw kept beside parsed members: %+v", e)
		}
	})
}

func FuzzTenantFromAuthority(f *testing.F) {
	f.Add("https://login.microsoftonline.com/dstsv2/t")
	f.Add("sts.windows.net/t/")
	f.Fuzz(func(t *testing.T, s string) {
		if tn := TenantFromAuthority(s); tn != "" && !challengeTenantLike(tn) {
			t.Fatalf("tenant %q has characters no tenant has", tn)
		}
	})
}

func TestTenantID(t *testing.T) {
	for s, want := range map[string]string{
		"72F988BF-86F1-41AF-91AB-2D7CD011DB47":  "72f988bf-86f1-41af-91ab-2d7cd011db47",
		" 72f988bf-86f1-41af-91ab-2d7cd011db47": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"00000000-0000-0000-0000-000000000000":  "",
		"common":                                "",
		"organizations":                         "",
		"contoso.onmicrosoft.com":               "",
		"XXX":                                   "",
		"ee4XXXXXXXXd6":                         "",
		"***":                                   "",
		"REDACTED":                              "",
		"{tenant 1}":                            "",
		"":                                      "",
	} {
		if got := TenantID(s); got != want {
			t.Errorf("TenantID(%q) = %q, want %q", s, got, want)
		}
	}
}

func FuzzTenantID(f *testing.F) {
	for _, s := range []string{"72f988bf-86f1-41af-91ab-2d7cd011db47", "00000000-0000-0000-0000-000000000000", "XXX", "common"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := TenantID(s)
		if got != "" && (GUID(got) != got || strings.Trim(got, "0-") == "") {
			t.Fatalf("TenantID(%q) = %q: not a real tenant GUID", s, got)
		}
	})
}

func TestParseJWTHeader(t *testing.T) {
	// The header Key Vault quoted in Azure-Samples/azuresandbox#188 (AKV10046).
	const quoted = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6IkhTMjNiN0RvN1RjYVUxUm9MSHdwSXEyNFZZZyIsImtpZCI6IkhTMjNiN0RvN1RjYVUxUm9MSHdwSXEyNFZZZyJ9"
	h, err := ParseJWTHeader(quoted)
	if err != nil {
		t.Fatal(err)
	}
	want := JWTHeader{JSON: `{"typ":"JWT","alg":"RS256","x5t":"HS23b7Do7TcaU1RoLHwpIq24VYg","kid":"HS23b7Do7TcaU1RoLHwpIq24VYg"}`,
		Alg: "RS256", KeyID: "HS23b7Do7TcaU1RoLHwpIq24VYg", X5T: "HS23b7Do7TcaU1RoLHwpIq24VYg"}
	if h != want {
		t.Errorf("ParseJWTHeader = %+v, want %+v", h, want)
	}
	for _, bad := range []string{
		"", "***", quoted + ".eyJ0aWQiOiJ0In0.c2ln", // a whole token is no header
		"eyJ0eXAiOiJKV1QifQ",     // {"typ":"JWT"}: no alg
		"WyJhbGciXQ",             // ["alg"]
		"eyJhbGciOiJSUzI1NiJ9!!", // not base64url
		strings.Repeat("A", 2000),
	} {
		if h, err := ParseJWTHeader(bad); err == nil {
			t.Errorf("ParseJWTHeader(%q) = %+v, want an error", bad, h)
		}
	}
}

func FuzzParseJWTHeader(f *testing.F) {
	f.Add("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6IksifQ")
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ0In0.c2ln")
	f.Add("***")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseJWTHeader(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(h.JSON, "\r\n") || h.Alg == "" || !json.Valid([]byte(h.JSON)) {
			t.Fatalf("ParseJWTHeader(%q) = %+v", s, h)
		}
	})
}

func TestObjectMembers(t *testing.T) {
	in := ` {"b" : [1, 2], "a":"x\u0026y", "b":null} `
	ms, ok := ObjectMembers([]byte(in))
	if !ok || len(ms) != 3 || ms[0].Key != "b" || string(ms[0].Value) != "[1, 2]" || string(ms[1].Value) != `"x\u0026y"` {
		t.Fatalf("ObjectMembers = %+v, %v", ms, ok)
	}
	if got := string(AppendObject(nil, ms)); got != `{"b":[1, 2],"a":"x\u0026y","b":null}` {
		t.Errorf("AppendObject = %s", got)
	}
	for _, bad := range []string{`[1]`, `{"a":1} {}`, `{"a":`, ``, `"x"`} {
		if _, ok := ObjectMembers([]byte(bad)); ok {
			t.Errorf("ObjectMembers(%q) ok", bad)
		}
	}
	if got := string(AppendObject(nil, nil)); got != `{}` {
		t.Errorf("empty object %s", got)
	}
}
