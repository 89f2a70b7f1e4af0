package azfake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

const (
	wantChallenge = `Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`
	defaultCaller = "appid=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee;oid=11111111-2222-3333-4444-555555555555;iss=https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
)

func TestVaultResponseHeaders(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{})
	tests := []struct {
		name, url, token string
		wantStatus       int
	}{
		{"success", u + "/secrets/db-password?api-version=7.5", vaultToken(), http.StatusOK},
		{"challenge", u + "/secrets/db-password?api-version=7.5", "", http.StatusUnauthorized},
		{"not found", u + "/secrets/nope?api-version=7.5", vaultToken(), http.StatusNotFound},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, tt.url, tt.token, "")
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			id := r.header.Get("x-ms-request-id")
			if _, err := uuid.Parse(id); err != nil || seen[id] {
				t.Errorf("x-ms-request-id = %q (parse error %v, seen before %v)", id, err, seen[id])
			}
			seen[id] = true
			for k, want := range map[string]string{
				"x-ms-keyvault-region":          "westeurope",
				"x-ms-keyvault-service-version": "1.9.1234.5",
				"x-ms-keyvault-network-info":    "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
				"Content-Type":                  "application/json; charset=utf-8",
			} {
				if got := r.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestVaultUnauthorized(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{})
	mint := func(mod func(*TokenClaims)) string {
		cl := TokenClaims{
			TenantID: DefaultTenantID, ObjectID: DefaultObjectID, AppID: DefaultAppID,
			Audience: "https://vault.azure.net", IssuedAt: testNow.Add(-time.Hour), ExpiresAt: testNow.Add(time.Hour),
		}
		mod(&cl)
		return MintToken(cl)
	}
	good := vaultToken()
	header, payload, _, _ := splitJWT(good)
	wantIssuer := func(found string) string {
		return "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/, " +
			"https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/, https://sts.windows.net/e2d54eb5-3869-4f70-8578-dee5fc7331f4/, " +
			"found " + found + "."
	}
	secret := u + "/secrets/db-password?api-version=7.5"
	tests := []struct {
		name, url, auth string
		wantMsg         string // exact, or a prefix when wantPrefix
		wantPrefix      bool
	}{
		{name: "no token", url: secret, wantMsg: "AKV10000: Request is missing a Bearer or PoP token."},
		{name: "no token, no api-version", url: u + "/secrets/db-password", wantMsg: "AKV10000: Request is missing a Bearer or PoP token."},
		{name: "basic auth", url: secret, auth: "Basic dXNlcjpwYXNz", wantMsg: "AKV10000: Request is missing a Bearer or PoP token."},
		{name: "malformed", url: secret, auth: "Bearer not-a-jwt", wantMsg: "AKV10013: Invalid token: the token is malformed."},
		{name: "bad signature", url: secret, auth: "Bearer " + header + "." + payload + ".c2lnbmF0dXJl",
			wantMsg: "AKV10046: Unable to resolve the key used for signature validation. EncodedJwtHeader: '" + header + "'."},
		{name: "audience with trailing slash", url: secret, auth: "Bearer " + mint(func(c *TokenClaims) { c.Audience = "https://vault.azure.net/" }),
			wantMsg: "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://vault.azure.net/."},
		{name: "management audience", url: secret, auth: "Bearer " + mint(func(c *TokenClaims) { c.Audience = "https://management.azure.com" }),
			wantMsg: "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com."},
		{name: "other tenant", url: secret, auth: "Bearer " + mint(func(c *TokenClaims) { c.TenantID = "bbbbbbbb-0000-0000-0000-000000000001" }),
			wantMsg: wantIssuer("https://sts.windows.net/bbbbbbbb-0000-0000-0000-000000000001/")},
		{name: "expired now", url: secret, auth: "Bearer " + mint(func(c *TokenClaims) { c.ExpiresAt = testNow }),
			wantMsg: "[TokenExpired] Error validating token: 'S2S12086'."},
		{name: "not yet valid", url: secret, auth: "Bearer " + mint(func(c *TokenClaims) { c.NotBefore = testNow.Add(time.Second) }),
			wantMsg: "Token not yet valid (Activity ID: ", wantPrefix: true},
		{name: "lowercase bearer", url: secret, auth: "bearer " + mint(func(c *TokenClaims) { c.ExpiresAt = testNow.Add(-time.Second) }),
			wantMsg: "[TokenExpired] Error validating token: 'S2S12086'."},
		{name: "special unauthorized-tenant", url: u + "/secrets/unauthorized-tenant?api-version=7.5", auth: "Bearer " + good,
			wantMsg: wantIssuer("https://sts.windows.net/00000000-0000-0000-0000-0000000000aa/")},
		{name: "special unauthorized-audience", url: u + "/secrets/unauthorized-audience?api-version=7.5", auth: "Bearer " + good,
			wantMsg: "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://storage.azure.com."},
		{name: "special unauthorized-expired", url: u + "/secrets/unauthorized-expired/versions?api-version=7.5", auth: "Bearer " + good,
			wantMsg: "[TokenExpired] Error validating token: 'S2S12086'."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body kvError
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401", res.StatusCode)
			}
			if got := res.Header.Get("WWW-Authenticate"); got != wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, wantChallenge)
			}
			if body.Error.Code != "Unauthorized" || body.Error.InnerError != nil {
				t.Errorf("error = %+v, want code Unauthorized without innererror", body.Error)
			}
			if tt.wantPrefix && !strings.HasPrefix(body.Error.Message, tt.wantMsg) || !tt.wantPrefix && body.Error.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", body.Error.Message, tt.wantMsg)
			}
		})
	}
}

func TestVaultOptions(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{Name: "kv-test", TenantID: "tenant-x", Audience: "https://vault.azure.cn"})

	r := do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", "", "")
	if got, want := r.header.Get("WWW-Authenticate"), `Bearer authorization="https://login.microsoftonline.com/tenant-x", resource="https://vault.azure.cn"`; got != want {
		t.Errorf("WWW-Authenticate = %q, want %q", got, want)
	}
	r = do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", vaultToken(), "")
	if got, want := r.kvErr(t).Message, "AKV10022: Invalid audience. Expected https://vault.azure.cn, found: https://vault.azure.net."; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}

	tok := MintToken(TokenClaims{TenantID: "tenant-x", ObjectID: "o", AppID: "a", Audience: "https://vault.azure.cn", IssuedAt: testNow})
	r = do(t, c, http.MethodGet, u+"/secrets/forbidden-private-link?api-version=7.5", tok, "")
	if got, want := r.kvErr(t).Message, "Connection is not an approved private link and caller was ignored because bypass is not set to 'AzureServices' and PublicNetworkAccess is set to 'Disabled'.\r\nVault: kv-test;location=westeurope"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	r = do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", tok, "")
	if r.status != http.StatusOK {
		t.Errorf("status = %d, want 200: %s", r.status, r.body)
	}
}

func TestVaultForbidden(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{})
	rbac := func(action, name string) string {
		return "Caller is not authorized to perform action on resource.\r\n" +
			"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
			"Caller: " + defaultCaller + "\r\n" +
			"Action: '" + action + "'\r\n" +
			"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/kvproxy-dev/providers/microsoft.keyvault/vaults/kvproxy-dev/secrets/" + name + "'\r\n" +
			"Assignment: (not found)\r\n" +
			"DenyAssignmentId: null\r\n" +
			"DecisionReason: 'DeniedWithNoValidRBAC' \r\n" +
			"Vault: kvproxy-dev;location=westeurope"
	}
	policy := func(perm string) string {
		return "The user, group or application '" + defaultCaller + "' does not have secrets " + perm +
			" permission on key vault 'kvproxy-dev;location=westeurope'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
	}
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode, wantInner      string
		wantMsg                  string
	}{
		{"firewall", "GET", "/secrets/forbidden-firewall?api-version=7.5", "", 403, "Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\nCaller: " + defaultCaller + "\r\nVault: kvproxy-dev;location=westeurope"},
		{"firewall without api-version", "GET", "/secrets/forbidden-firewall", "", 403, "Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\nCaller: " + defaultCaller + "\r\nVault: kvproxy-dev;location=westeurope"},
		{"private link", "GET", "/secrets/forbidden-private-link/0123456789abcdef0123456789abcdef?api-version=7.5", "", 403, "Forbidden", "ForbiddenByConnection",
			"Connection is not an approved private link and caller was ignored because bypass is not set to 'AzureServices' and PublicNetworkAccess is set to 'Disabled'.\r\nVault: kvproxy-dev;location=westeurope"},
		{"rbac get", "GET", "/secrets/forbidden-rbac?api-version=7.5", "", 403, "Forbidden", "ForbiddenByRbac",
			rbac("Microsoft.KeyVault/vaults/secrets/getSecret/action", "forbidden-rbac")},
		{"rbac get version", "GET", "/secrets/forbidden-rbac/0123456789abcdef0123456789abcdef?api-version=7.5", "", 403, "Forbidden", "ForbiddenByRbac",
			rbac("Microsoft.KeyVault/vaults/secrets/getSecret/action", "forbidden-rbac")},
		{"rbac set", "PUT", "/secrets/forbidden-rbac?api-version=7.5", `{"value":"x"}`, 403, "Forbidden", "ForbiddenByRbac",
			rbac("Microsoft.KeyVault/vaults/secrets/setSecret/action", "forbidden-rbac")},
		{"rbac delete", "DELETE", "/secrets/forbidden-rbac?api-version=7.5", "", 403, "Forbidden", "ForbiddenByRbac",
			rbac("Microsoft.KeyVault/vaults/secrets/delete/action", "forbidden-rbac")},
		{"rbac list versions", "GET", "/secrets/forbidden-rbac/versions?api-version=7.5", "", 403, "Forbidden", "ForbiddenByRbac",
			rbac("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "forbidden-rbac")},
		{"policy get", "GET", "/secrets/forbidden-policy?api-version=7.5", "", 403, "Forbidden", "ForbiddenByPolicy", policy("get")},
		{"policy head", "HEAD", "/secrets/forbidden-policy?api-version=7.5", "", 403, "", "", ""},
		{"policy set", "PUT", "/secrets/forbidden-policy?api-version=7.5", `{"value":"x"}`, 403, "Forbidden", "ForbiddenByPolicy", policy("set")},
		{"policy delete", "DELETE", "/secrets/forbidden-policy?api-version=7.5", "", 403, "Forbidden", "ForbiddenByPolicy", policy("delete")},
		{"policy list", "GET", "/secrets/forbidden-policy/versions?api-version=7.5", "", 403, "Forbidden", "ForbiddenByPolicy", policy("list")},
		{"disabled", "GET", "/secrets/forbidden-disabled?api-version=7.5", "", 403, "Forbidden", "SecretDisabled",
			"Operation get is not allowed on a disabled secret."},
		{"throttled", "GET", "/secrets/throttled?api-version=7.5", "", 429, "Throttled", "",
			"Request was not allowed because application has exceeded the maximum request limit. Reason: VaultRequestTypeLimitReached."},
		{"unsupported method on a special name", "POST", "/secrets/forbidden-rbac?api-version=7.5", "", 405, "BadParameter", "",
			"The method POST is not allowed on /secrets/forbidden-rbac."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, tt.method, u+tt.path, vaultToken(), tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if _, ok := r.header["X-Ms-Keyvault-Rbac-Assignment-Id"]; ok {
				t.Error("x-ms-keyvault-rbac-assignment-id present")
			}
			if tt.name == "throttled" && r.header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q, want 1", r.header.Get("Retry-After"))
			}
			if tt.method == http.MethodHead {
				if len(r.body) != 0 {
					t.Errorf("HEAD answered a body: %q", r.body)
				}
				return
			}
			e := r.kvErr(t)
			inner := ""
			if e.InnerError != nil {
				inner = e.InnerError.Code
			}
			if e.Code != tt.wantCode || inner != tt.wantInner || e.Message != tt.wantMsg {
				t.Errorf("error = {%s, %s, %q},\nwant    {%s, %s, %q}", e.Code, inner, e.Message, tt.wantCode, tt.wantInner, tt.wantMsg)
			}
		})
	}
}

func TestVaultBadRequests(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{})
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantMsg                  string
	}{
		{"missing api-version", "GET", "/secrets/db-password", "", 400, "The request URI contains an invalid or missing api-version parameter."},
		{"empty api-version", "GET", "/secrets?api-version=", "", 400, "The request URI contains an invalid or missing api-version parameter."},
		{"invalid name", "GET", "/secrets/bad_name?api-version=7.5", "", 400, "The request URI contains an invalid name: bad_name"},
		{"name too long", "PUT", "/secrets/" + strings.Repeat("a", 128) + "?api-version=7.5", `{"value":"x"}`, 400, "The request URI contains an invalid name: " + strings.Repeat("a", 128)},
		{"invalid json", "PUT", "/secrets/new?api-version=7.5", `{"value":`, 400, "The request body is not valid JSON: unexpected end of JSON input"},
		{"no body", "PUT", "/secrets/new?api-version=7.5", "", 400, "The request body is not valid JSON: unexpected end of JSON input"},
		{"missing value", "PUT", "/secrets/new?api-version=7.5", `{"contentType":"text/plain"}`, 400, "Property 'value' is required."},
		{"other collection", "GET", "/keys/k?api-version=7.5", "", 404, "The request URI contains an unsupported path: /keys/k"},
		{"too deep", "GET", "/secrets/a/b/c?api-version=7.5", "", 404, "The request URI contains an unsupported path: /secrets/a/b/c"},
		{"post", "POST", "/secrets/db-password?api-version=7.5", `{"value":"x"}`, 405, "The method POST is not allowed on /secrets/db-password."},
		{"put version", "PUT", "/secrets/db-password/0123456789abcdef0123456789abcdef?api-version=7.5", `{"value":"x"}`, 405,
			"The method PUT is not allowed on /secrets/db-password/0123456789abcdef0123456789abcdef."},
		{"delete list", "DELETE", "/secrets?api-version=7.5", "", 405, "The method DELETE is not allowed on /secrets."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, tt.method, u+tt.path, vaultToken(), tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			e := r.kvErr(t)
			if e.Code != "BadParameter" || e.Message != tt.wantMsg {
				t.Errorf("error = {%s, %q}, want {BadParameter, %q}", e.Code, e.Message, tt.wantMsg)
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

type bundle struct {
	Value       *string           `json:"value"`
	ContentType string            `json:"contentType"`
	ID          string            `json:"id"`
	Attributes  attributes        `json:"attributes"`
	Tags        map[string]string `json:"tags"`
	RecoveryID  string            `json:"recoveryId"`
	Deleted     int64             `json:"deletedDate"`
	Purge       int64             `json:"scheduledPurgeDate"`
}

var versionedID = regexp.MustCompile(`^https://127\.0\.0\.1:\d+/secrets/([0-9a-zA-Z-]+)/([0-9a-f]{32})$`)

func TestVaultSecretsCRUD(t *testing.T) {
	v, u, c := startVault(t, VaultOptions{})
	tok := vaultToken()
	wantAttrs := attributes{Enabled: true, Created: testNow.Unix(), Updated: testNow.Unix(), RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
	get := func(path string) (response, bundle) {
		t.Helper()
		r := do(t, c, http.MethodGet, u+path+"?api-version=7.5", tok, "")
		var b bundle
		if r.status == http.StatusOK {
			r.decode(t, &b)
		}
		return r, b
	}

	// Seeded secret, latest by three spellings.
	r, seeded := get("/secrets/db-password")
	if r.status != http.StatusOK || seeded.Value == nil || *seeded.Value != "correct-horse-battery-staple" {
		t.Fatalf("GET db-password = %d %s", r.status, r.body)
	}
	m := versionedID.FindStringSubmatch(seeded.ID)
	if m == nil || m[1] != "db-password" {
		t.Fatalf("id = %q", seeded.ID)
	}
	if seeded.Attributes != wantAttrs {
		t.Errorf("attributes = %+v, want %+v", seeded.Attributes, wantAttrs)
	}
	var raw map[string]json.RawMessage
	r.decode(t, &raw)
	if _, ok := raw["contentType"]; ok {
		t.Error("contentType present on a secret without one")
	}
	if _, ok := raw["tags"]; ok {
		t.Error("tags present on a secret without any")
	}
	for _, p := range []string{"/secrets/db-password/", "/secrets/db-password/" + m[2], "//secrets/db-password"} {
		if r, b := get(p); r.status != http.StatusOK || b.ID != seeded.ID {
			t.Errorf("GET %s = %d %s", p, r.status, r.body)
		}
	}
	if r, _ := get("/secrets/api-key"); r.status != http.StatusOK || !strings.Contains(string(r.body), `"value":"kv-demo-0f9c"`) {
		t.Errorf("GET api-key = %d %s", r.status, r.body)
	}

	// Unknown secret and version.
	r, _ = get("/secrets/nope")
	if e := r.kvErr(t); r.status != 404 || e.Code != "SecretNotFound" || e.Message != "A secret with (name/id) nope was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182" {
		t.Errorf("GET nope = %d %+v", r.status, e)
	}
	r, _ = get("/secrets/db-password/ffffffffffffffffffffffffffffffff")
	if e := r.kvErr(t); r.status != 404 || !strings.HasPrefix(e.Message, "A secret with (name/id) db-password/ffffffffffffffffffffffffffffffff was not found") {
		t.Errorf("GET unknown version = %d %+v", r.status, e)
	}

	// PUT creates, a second PUT adds a version; both stay readable.
	r = do(t, c, http.MethodPut, u+"/secrets/new-one?api-version=7.5", tok, `{"value":"v1","contentType":"text/plain","tags":{"team":"a"}}`)
	var put1 bundle
	r.decode(t, &put1)
	if r.status != 200 || *put1.Value != "v1" || put1.ContentType != "text/plain" || put1.Tags["team"] != "a" || put1.Attributes != wantAttrs {
		t.Fatalf("PUT = %d %s", r.status, r.body)
	}
	r = do(t, c, http.MethodPut, u+"/secrets/new-one?api-version=7.5", tok, `{"value":""}`)
	var put2 bundle
	r.decode(t, &put2)
	if r.status != 200 || put2.Value == nil || *put2.Value != "" || put2.ID == put1.ID {
		t.Fatalf("second PUT = %d %s", r.status, r.body)
	}
	if _, b := get("/secrets/new-one"); b.ID != put2.ID || *b.Value != "" || b.ContentType != "" {
		t.Errorf("latest = %+v, want the second version", b)
	}
	if _, b := get(strings.TrimPrefix(put1.ID, u)); *b.Value != "v1" || b.Tags["team"] != "a" {
		t.Errorf("first version = %+v", b)
	}
	v.SetSecret("new-one", "v3")
	if _, b := get("/secrets/new-one"); *b.Value != "v3" {
		t.Errorf("after SetSecret, latest = %q", *b.Value)
	}

	// HEAD is GET without a body.
	if r := do(t, c, http.MethodHead, u+"/secrets/db-password?api-version=7.5", tok, ""); r.status != 200 || len(r.body) != 0 {
		t.Errorf("HEAD = %d %q", r.status, r.body)
	}
	if r := do(t, c, http.MethodHead, u+"/secrets/nope?api-version=7.5", tok, ""); r.status != 404 {
		t.Errorf("HEAD nope = %d", r.status)
	}

	// DELETE answers the deleted bundle; the secret is then gone.
	r = do(t, c, http.MethodDelete, u+"/secrets/new-one?api-version=7.5", tok, "")
	var del bundle
	r.decode(t, &del)
	wantRecovery := u + "/deletedsecrets/new-one"
	if r.status != 200 || *del.Value != "v3" || del.RecoveryID != wantRecovery || del.Deleted != testNow.Unix() || del.Purge != testNow.AddDate(0, 0, 90).Unix() {
		t.Errorf("DELETE = %d %s", r.status, r.body)
	}
	if r, _ := get("/secrets/new-one"); r.status != 404 {
		t.Errorf("GET after DELETE = %d", r.status)
	}
	if r := do(t, c, http.MethodDelete, u+"/secrets/new-one?api-version=7.5", tok, ""); r.status != 404 || r.kvErr(t).Code != "SecretNotFound" {
		t.Errorf("second DELETE = %d %s", r.status, r.body)
	}
}

func TestVaultIDsUseHostHeader(t *testing.T) {
	_, u, c := startVault(t, VaultOptions{})
	req, _ := http.NewRequest(http.MethodGet, u+"/secrets/db-password?api-version=7.5", nil)
	req.Host = "myvault.vault.azure.net"
	req.Header.Set("Authorization", "Bearer "+vaultToken())
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b bundle
	if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.ID, "https://myvault.vault.azure.net/secrets/db-password/") {
		t.Errorf("id = %q", b.ID)
	}
}

type listPage struct {
	Value []struct {
		ID          string            `json:"id"`
		Value       *string           `json:"value"`
		Attributes  attributes        `json:"attributes"`
		ContentType string            `json:"contentType"`
		Tags        map[string]string `json:"tags"`
	} `json:"value"`
	NextLink *string `json:"nextLink"`
}

func TestVaultList(t *testing.T) {
	v, u, c := startVault(t, VaultOptions{})
	tok := vaultToken()
	list := func(url string) (response, listPage) {
		t.Helper()
		r := do(t, c, http.MethodGet, url, tok, "")
		var p listPage
		if r.status == http.StatusOK {
			r.decode(t, &p)
		}
		return r, p
	}

	r, p := list(u + "/secrets?api-version=7.5")
	if r.status != 200 || !strings.HasSuffix(string(r.body), `"nextLink":null}`) {
		t.Fatalf("list = %d %s", r.status, r.body)
	}
	if len(p.Value) != 2 || p.Value[0].ID != u+"/secrets/api-key" || p.Value[1].ID != u+"/secrets/db-password" {
		t.Fatalf("list = %s", r.body)
	}
	if p.Value[0].Value != nil || !p.Value[0].Attributes.Enabled {
		t.Errorf("list item = %+v", p.Value[0])
	}

	for i := range 28 {
		v.SetSecret(fmt.Sprintf("s-%02d", i), "x")
	}
	collect := func(first string) (ids []string, pages int) {
		t.Helper()
		for next := first; next != ""; pages++ {
			r, p := list(next)
			if r.status != 200 {
				t.Fatalf("GET %s = %d %s", next, r.status, r.body)
			}
			for _, it := range p.Value {
				ids = append(ids, strings.TrimPrefix(it.ID, u+"/secrets/"))
			}
			next = ""
			if p.NextLink != nil {
				next = *p.NextLink
				if path, _, _ := strings.Cut(first, "?"); !strings.HasPrefix(next, path+"?") || !strings.Contains(next, "api-version=7.5") {
					t.Fatalf("nextLink = %q", next)
				}
			}
		}
		return ids, pages
	}
	ids, pages := collect(u + "/secrets?api-version=7.5")
	if len(ids) != 30 || pages != 2 || ids[0] != "api-key" || ids[1] != "db-password" || ids[29] != "s-27" {
		t.Errorf("default paging: %d ids in %d pages: %v", len(ids), pages, ids)
	}
	ids, pages = collect(u + "/secrets?api-version=7.5&maxresults=7")
	if len(ids) != 30 || pages != 5 {
		t.Errorf("maxresults=7: %d ids in %d pages", len(ids), pages)
	}

	for _, bad := range []string{"0", "26", "x", "-1"} {
		r, _ := list(u + "/secrets?api-version=7.5&maxresults=" + bad)
		if r.status != 400 || r.kvErr(t).Code != "BadParameter" {
			t.Errorf("maxresults=%s: %d %s", bad, r.status, r.body)
		}
	}
	if r, _ := list(u + "/secrets?api-version=7.5&$skiptoken=!!"); r.status != 400 {
		t.Errorf("bad $skiptoken: %d", r.status)
	}

	v.SetSecret("versioned", "1")
	do(t, c, http.MethodPut, u+"/secrets/versioned?api-version=7.5", tok, `{"value":"2","contentType":"text/plain","tags":{"k":"v"}}`)
	v.SetSecret("versioned", "3")
	r, p = list(u + "/secrets/versioned/versions?api-version=7.5")
	if r.status != 200 || len(p.Value) != 3 || p.NextLink != nil {
		t.Fatalf("versions = %d %s", r.status, r.body)
	}
	tagged := 0
	for _, it := range p.Value {
		if m := versionedID.FindStringSubmatch(it.ID); m == nil || m[1] != "versioned" || it.Value != nil {
			t.Errorf("version item = %+v", it)
		}
		if it.ContentType == "text/plain" && it.Tags["k"] == "v" {
			tagged++
		}
	}
	if tagged != 1 {
		t.Errorf("%d versions carry the PUT's contentType and tags, want 1", tagged)
	}
	if ids, pages := collect(u + "/secrets/versioned/versions?api-version=7.5&maxresults=1"); len(ids) != 3 || pages != 3 {
		t.Errorf("versions paging: %v in %d pages", ids, pages)
	}
	if r, _ := list(u + "/secrets/nope/versions?api-version=7.5"); r.status != 404 || r.kvErr(t).Code != "SecretNotFound" {
		t.Errorf("versions of unknown = %d %s", r.status, r.body)
	}
}

func TestVaultFailNext(t *testing.T) {
	tests := []struct {
		name       string
		status, n  int
		retryAfter string
		wantCode   string
	}{
		{"throttled", 429, 2, "7", "Throttled"},
		{"unavailable", 503, 1, "", "ServiceUnavailable"},
		{"internal", 500, 3, "", "InternalServerError"},
		{"gateway timeout", 504, 1, "2", "GatewayTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			faults := new(VaultFaults)
			v, u, c := startVault(t, VaultOptions{Faults: faults})
			faults.FailNext(tt.status, tt.n, tt.retryAfter)
			for i := range tt.n {
				// Any path, and before authentication.
				r := do(t, c, http.MethodGet, u+fmt.Sprintf("/anything/%d", i), "", "")
				if r.status != tt.status || r.kvErr(t).Code != tt.wantCode || r.header.Get("Retry-After") != tt.retryAfter {
					t.Fatalf("request %d = %d Retry-After %q %s", i, r.status, r.header.Get("Retry-After"), r.body)
				}
				if r.header.Get("x-ms-request-id") == "" {
					t.Error("injected failure without x-ms-request-id")
				}
			}
			if r := do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", vaultToken(), ""); r.status != 200 {
				t.Errorf("after %d failures: %d %s", tt.n, r.status, r.body)
			}
			if got := len(v.Requests()); got != tt.n+1 {
				t.Errorf("recorded %d requests, want %d", got, tt.n+1)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		faults := new(VaultFaults)
		_, u, c := startVault(t, VaultOptions{Faults: faults})
		faults.FailNext(503, 5, "")
		faults.FailNext(503, 0, "")
		if r := do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", vaultToken(), ""); r.status != 200 {
			t.Errorf("after cancel: %d", r.status)
		}
	})
}

func TestVaultLatency(t *testing.T) {
	faults := new(VaultFaults)
	v, u, c := startVault(t, VaultOptions{Faults: faults})
	url := u + "/secrets/db-password?api-version=7.5"

	const d = 30 * time.Millisecond
	faults.SetLatency(d)
	start := time.Now()
	if r := do(t, c, http.MethodGet, url, vaultToken(), ""); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if el := time.Since(start); el < d {
		t.Errorf("answered after %v, latency %v", el, d)
	}

	faults.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+vaultToken())
	if res, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			res.Body.Close()
		}
		t.Fatalf("Do = %v, want deadline exceeded", err)
	}
	if got := len(v.Requests()); got != 2 {
		t.Errorf("recorded %d requests, want 2", got)
	}

	faults.SetLatency(0)
	if r := do(t, c, http.MethodGet, url, vaultToken(), ""); r.status != 200 {
		t.Errorf("status %d", r.status)
	}
}

func TestVaultRequests(t *testing.T) {
	v, u, c := startVault(t, VaultOptions{})
	tok := vaultToken()
	do(t, c, http.MethodPut, u+"/secrets/recorded?api-version=7.5", tok, `{"value":"s3cret"}`)
	do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", "", "")
	do(t, c, http.MethodGet, u+"/secrets/db-password?api-version=7.5", "garbage", "")

	got := v.Requests()
	if len(got) != 3 {
		t.Fatalf("recorded %d requests, want 3", len(got))
	}
	put := got[0]
	if put.Method != "PUT" || put.Path != "/secrets/recorded" || put.RawQuery != "api-version=7.5" ||
		string(put.Body) != `{"value":"s3cret"}` || put.Header.Get("Content-Type") != "application/json" || put.Token != tok {
		t.Errorf("PUT recorded as %+v", put)
	}
	if want, _ := ParseToken(tok); put.Claims == nil || *put.Claims != want {
		t.Errorf("claims = %+v, want %+v", put.Claims, want)
	}
	if got[1].Token != "" || got[1].Claims != nil {
		t.Errorf("no-token request recorded as token %q claims %+v", got[1].Token, got[1].Claims)
	}
	if got[2].Token != "garbage" || got[2].Claims != nil {
		t.Errorf("bad-token request recorded as token %q claims %+v", got[2].Token, got[2].Claims)
	}

	got[0].Method = "changed"
	got[0].Header.Set("X-Changed", "1")
	got[0].Body[0] = 'X'
	got[0].Claims.AppID = "changed"
	if again := v.Requests()[0]; again.Method != "PUT" || again.Header.Get("X-Changed") != "" || again.Body[0] != '{' || again.Claims.AppID != DefaultAppID {
		t.Error("Requests shares memory with the vault's record")
	}
	v.ResetRequests()
	if n := len(v.Requests()); n != 0 {
		t.Errorf("after reset: %d requests", n)
	}
}

func TestVaultConcurrent(t *testing.T) {
	v, u, c := startVault(t, VaultOptions{})
	tok := vaultToken()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			name := fmt.Sprintf("/secrets/c-%d?api-version=7.5", i%4)
			for j := range 5 {
				body := fmt.Sprintf(`{"value":"%d-%d"}`, i, j)
				if r := do(t, c, http.MethodPut, u+name, tok, body); r.status != 200 {
					t.Errorf("PUT %d", r.status)
				}
				if r := do(t, c, http.MethodGet, u+name, tok, ""); r.status != 200 {
					t.Errorf("GET %d", r.status)
				}
				_ = v.Requests()
			}
		})
	}
	wg.Wait()
	if n := len(v.Requests()); n != 16*5*2 {
		t.Errorf("recorded %d requests, want %d", n, 16*5*2)
	}
}

func TestVaultRecordingIsBounded(t *testing.T) {
	v := NewVault(VaultOptions{})
	for i := range maxRecorded + 5 {
		r := httptest.NewRequest("GET", fmt.Sprintf("/secrets/s%d?api-version=7.5", i), nil)
		v.ServeHTTP(httptest.NewRecorder(), r)
	}
	reqs := v.Requests()
	if len(reqs) != maxRecorded {
		t.Fatalf("%d recorded, want %d", len(reqs), maxRecorded)
	}
	if last := reqs[len(reqs)-1].Path; last != fmt.Sprintf("/secrets/s%d", maxRecorded+4) {
		t.Errorf("newest request %s not kept", last)
	}
}
