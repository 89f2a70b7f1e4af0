package diagnose

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
)

// diagCase is one file of testdata/cases: a refusal from the vault (most
// taken from public issues, see "source") and what Diagnose must make of it.
type diagCase struct {
	Name           string            `json:"name"`
	Source         string            `json:"source"`
	Status         int               `json:"status"`
	Header         map[string]string `json:"header"`
	Body           string            `json:"body"`
	Method         string            `json:"method"`
	Path           string            `json:"path"`
	Vault          string            `json:"vault"`
	Identity       Identity          `json:"identity"`
	Scope          string            `json:"scope"`
	VaultTenantID  string            `json:"vaultTenantId"`
	TokenExpiresAt time.Time         `json:"tokenExpiresAt"`
	TokenNotBefore time.Time         `json:"tokenNotBefore"`
	Now            time.Time         `json:"now"`
	Want           map[string]any    `json:"want"`
}

// diagTestNow is the clock of every case that names none.
var diagTestNow = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)

func (c diagCase) input() Input {
	h := http.Header{}
	for k, v := range c.Header {
		h.Set(k, v)
	}
	in := Input{
		Status: c.Status, Body: []byte(c.Body),
		NetworkInfo: h.Get("x-ms-keyvault-network-info"), RequestID: h.Get("x-ms-request-id"),
		Method: c.Method, Path: c.Path, Vault: c.Vault,
		Token: kvwire.Claims{TenantID: c.Identity.TenantID, ObjectID: c.Identity.ObjectID, AppID: c.Identity.AppID,
			ExpiresAt: c.TokenExpiresAt, NotBefore: c.TokenNotBefore},
		Scope: c.Scope, VaultTenantID: c.VaultTenantID, Now: c.Now,
	}
	if v := h.Values("WWW-Authenticate"); len(v) > 0 {
		in.Challenge, _ = kvwire.ParseChallenge(strings.Join(v, ", "))
	}
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	if in.Now.IsZero() {
		in.Now = diagTestNow
	}
	return in
}

// vaultCodes are the codes Diagnose gives (the vault's own answers).
func vaultCodes() []string {
	var out []string
	for _, c := range All() {
		if c.Vault {
			out = append(out, c.Name)
		}
	}
	return out
}

// fixPlaceholder matches the placeholders a fix may hold.
var fixPlaceholder = regexp.MustCompile(`<[a-z][a-z-]{0,40}>`)

// diagCheckInvariants holds for every diagnosis.
func diagCheckInvariants(t *testing.T, d *Diagnosis) {
	t.Helper()
	if !slices.Contains(vaultCodes(), d.Code) {
		t.Fatalf("code %q is not a vault diagnosis code", d.Code)
	}
	if d.Detail == "" {
		t.Fatal("empty detail")
	}
	for _, s := range []string{d.Detail, d.Fix} {
		if strings.ContainsAny(s, "\r\n") {
			t.Fatalf("%q spans lines", s)
		}
	}
	// Placeholders such as <vault-name> are for the reader to replace.
	if strings.ContainsAny(fixPlaceholder.ReplaceAllString(d.Fix, "x"), "`;|&<>\\") {
		t.Fatalf("fix %q holds a shell metacharacter", d.Fix)
	}
	if _, err := json.Marshal(d); err != nil {
		t.Fatal(err)
	}
}

func TestDiagnoseTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "cases", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c diagCase
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(c.Name, func(t *testing.T) {
			d := Diagnose(c.input())
			if d == nil {
				t.Fatal("Diagnose = nil")
			}
			diagCheckInvariants(t, d)
			got := map[string]any{}
			b, _ := json.Marshal(d)
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for k, want := range c.Want {
				switch k {
				case "detailContains":
					for _, s := range want.([]any) {
						if !strings.Contains(d.Detail, s.(string)) {
							t.Errorf("detail %q does not contain %q", d.Detail, s)
						}
					}
				case "detailExcludes":
					for _, s := range want.([]any) {
						if strings.Contains(d.Detail, s.(string)) {
							t.Errorf("detail %q contains %q", d.Detail, s)
						}
					}
				default:
					g, ok := got[k]
					if !ok {
						g = ""
					}
					if !reflect.DeepEqual(g, want) {
						t.Errorf("%s = %#v, want %#v", k, g, want)
					}
				}
			}
			if d.Vault != c.Vault {
				t.Errorf("vault = %q, want %q", d.Vault, c.Vault)
			}
			if testing.Verbose() {
				t.Logf("%s: %s | fix: %s", d.Code, d.Detail, d.Fix)
			}
		})
	}
}

func TestDiagnoseOtherStatuses(t *testing.T) {
	for _, status := range []int{0, 200, 400, 404, 409, 501} {
		if d := Diagnose(Input{Status: status, Body: []byte(`{"error":{"code":"Forbidden"}}`)}); d != nil {
			t.Errorf("Diagnose(status %d) = %+v, want nil", status, d)
		}
	}
}

func TestDiagnoseZeroInput(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		d := Diagnose(Input{Status: status})
		if d == nil {
			t.Fatalf("Diagnose(%d) = nil", status)
		}
		diagCheckInvariants(t, d)
	}
}

func TestDiagnoseSanitizesIdentity(t *testing.T) {
	d := Diagnose(Input{Status: http.StatusForbidden, Vault: "myvault.vault.azure.net",
		Token: kvwire.Claims{TenantID: "t\nx", ObjectID: "$(id)", AppID: "ok-app"},
		Body:  []byte(`{"error":{"code":"Forbidden","message":"x","innererror":{"code":"ForbiddenByRbac"}}}`)})
	if d.Identity != (Identity{AppID: "ok-app"}) {
		t.Errorf("identity = %+v; values with unexpected characters must be dropped", d.Identity)
	}
	if !strings.Contains(d.Fix, "<principal-object-id>") || !strings.Contains(d.Fix, `--role "Key Vault Administrator"`) {
		t.Errorf("fix = %q", d.Fix)
	}
}

func TestDiagnoseSuggestRole(t *testing.T) {
	tests := []struct {
		action string
		hsm    bool
		want   string
	}{
		{"Microsoft.KeyVault/vaults/secrets/getSecret/action", false, "Key Vault Secrets User"},
		{"Microsoft.KeyVault/vaults/secrets/readMetadata/action", false, "Key Vault Secrets User"},
		{"Microsoft.KeyVault/vaults/secrets/setSecret/action", false, "Key Vault Secrets Officer"},
		{"Microsoft.KeyVault/vaults/secrets/delete", false, "Key Vault Secrets Officer"},
		{"Microsoft.KeyVault/vaults/deletedSecrets/recover/action", false, "Key Vault Secrets Officer"},
		{"Microsoft.KeyVault/vaults/keys/encrypt/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/decrypt/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/sign/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/verify/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/wrap/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/unwrap/action", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/read", false, "Key Vault Crypto User"},
		{"Microsoft.KeyVault/vaults/keys/create/action", false, "Key Vault Crypto Officer"},
		{"Microsoft.KeyVault/vaults/keys/delete", false, "Key Vault Crypto Officer"},
		{"Microsoft.KeyVault/vaults/keys/release/action", false, "Key Vault Crypto Officer"},
		{"Microsoft.KeyVault/vaults/keyrotationpolicies/read", false, "Key Vault Crypto Officer"},
		{"Microsoft.KeyVault/vaults/certificates/read", false, "Key Vault Certificate User"},
		{"Microsoft.KeyVault/vaults/certificates/create/action", false, "Key Vault Certificates Officer"},
		{"Microsoft.KeyVault/vaults/certificatecas/read", false, "Key Vault Certificates Officer"},
		{"Microsoft.KeyVault/vaults/read", false, "Key Vault Reader"},
		{"Microsoft.KeyVault/vaults/storageaccounts/read", false, "Key Vault Reader"},
		{"Microsoft.KeyVault/vaults/storageaccounts/set/action", false, "Key Vault Administrator"},
		{"", false, "Key Vault Administrator"},
		{"Microsoft.KeyVault/managedHsm/keys/unwrap/action", true, "Managed HSM Crypto User"},
		{"Microsoft.KeyVault/managedHsm/keys/create", true, "Managed HSM Crypto Officer"},
		{"Microsoft.KeyVault/managedHsm/keys/read/action", true, "Managed HSM Crypto User"},
		{"Microsoft.KeyVault/managedHsm/keys/release/action", true, "Managed HSM Crypto Service Release User"},
		{"Microsoft.KeyVault/managedHsm/roleAssignments/read/action", true, "Managed HSM Policy Administrator"},
		{"Microsoft.KeyVault/managedHsm/roleAssignments/write/action", true, "Managed HSM Policy Administrator"},
		{"Microsoft.KeyVault/managedHsm/backup/start/action", true, "Managed HSM Backup"},
		{"Microsoft.KeyVault/managedHsm/securitydomain/download/action", true, "Managed HSM Administrator"},
	}
	for _, tt := range tests {
		if got := suggestRole(tt.action, tt.hsm); got != tt.want {
			t.Errorf("suggestRole(%q, %v) = %q, want %q", tt.action, tt.hsm, got, tt.want)
		}
	}
}

func TestDiagnosePermissionFor(t *testing.T) {
	tests := []struct {
		method, path, want string
	}{
		{"GET", "/secrets", "secrets list"},
		{"GET", "/secrets/", "secrets list"},
		{"GET", "/secrets/db/versions", "secrets list"},
		{"GET", "/secrets/db", "secrets get"},
		{"HEAD", "/secrets/db/0123", "secrets get"},
		{"PUT", "/secrets/db", "secrets set"},
		{"PATCH", "/secrets/db/0123", "secrets set"},
		{"DELETE", "/secrets/db", "secrets delete"},
		{"POST", "/secrets/db/backup", "secrets backup"},
		{"POST", "/secrets/restore", "secrets restore"},
		{"GET", "/deletedsecrets", "secrets list"},
		{"DELETE", "/deletedsecrets/db", "secrets purge"},
		{"POST", "/deletedsecrets/db/recover", "secrets recover"},
		{"GET", "/keys", "keys list"},
		{"GET", "/keys/k/abc", "keys get"},
		{"PUT", "/keys/k", "keys import"},
		{"PATCH", "/keys/k/abc", "keys update"},
		{"POST", "/keys/k/create", "keys create"},
		{"POST", "/keys/k/abc/sign", "keys sign"},
		{"POST", "/keys/k/abc/wrapkey", "keys wrapKey"},
		{"POST", "/keys/k/abc/unwrapkey", "keys unwrapKey"},
		{"POST", "/keys/k/rotate", "keys rotate"},
		{"GET", "/certificates", "certificates list"},
		{"GET", "/certificates/c", "certificates get"},
		{"POST", "/certificates/c/import", "certificates import"},
		{"GET", "/certificates/contacts", "certificates managecontacts"},
		{"GET", "/certificates/issuers", "certificates listissuers"},
		{"GET", "/certificates/issuers/i", "certificates getissuers"},
		{"PUT", "/certificates/issuers/i", "certificates setissuers"},
		{"DELETE", "/certificates/issuers/i", "certificates deleteissuers"},
		{"GET", "/", ""},
		{"GET", "/storage", ""},
		{"POST", "/keys/k/abc/bogus", ""},
	}
	for _, tt := range tests {
		kind, perm := permissionFor(tt.method, tt.path)
		got := strings.TrimSpace(kind + " " + perm)
		if got != tt.want {
			t.Errorf("permissionFor(%s %s) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestEnrichBody(t *testing.T) {
	d := &Diagnosis{Code: ForbiddenByRBAC, Detail: "x <&> y", Vault: "v.vault.azure.net",
		Fix: `az role assignment create --scope "$(az keyvault show --name <vault-name> --query id -o tsv)"`}
	tests := []struct {
		name, body string
		ok         bool
		want       string // with KV standing for the diagnosis
	}{
		{"Key Vault error", `{"error":{"code":"Forbidden","message":"a\r\nb","innererror":{"code":"ForbiddenByRbac"}}}`, true,
			`{"error":{"code":"Forbidden","message":"a\r\nb","innererror":{"code":"ForbiddenByRbac"}},"kvproxy":KV}`},
		{"whitespace and numbers kept byte for byte", " \n{ \"error\" : { \"n\" : 1.50e+3 } , \"b\":[1, 2] }\n", true,
			`{"error":{ "n" : 1.50e+3 },"b":[1, 2],"kvproxy":KV}`},
		{"existing kvproxy replaced, order kept", `{"a":1,"kvproxy":{"old":true},"b":2,"kvproxy":3}`, true,
			`{"a":1,"b":2,"kvproxy":KV}`},
		{"escaped kvproxy key is the same key", `{"\u006bvproxy":1,"c":"\u00e9"}`, true, `{"c":"\u00e9","kvproxy":KV}`},
		{"duplicate keys kept", `{"a":1,"a":2}`, true, `{"a":1,"a":2,"kvproxy":KV}`},
		{"empty object", `{}`, true, `{"kvproxy":KV}`},
		{"array", `[{"error":{}}]`, false, ""},
		{"string", `"{}"`, false, ""},
		{"truncated", `{"error":{"code":"Forb`, false, ""},
		{"trailing garbage", `{"a":1} x`, false, ""},
		{"two objects", `{"a":1}{"b":2}`, false, ""},
		{"html", `<html>403</html>`, false, ""},
		{"empty", ``, false, ""},
	}
	var enc bytes.Buffer
	e := json.NewEncoder(&enc)
	e.SetEscapeHTML(false)
	e.Encode(d) //nolint:errcheck
	kv := strings.TrimSpace(enc.String())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := EnrichBody([]byte(tt.body), d)
			if ok != tt.ok {
				t.Fatalf("EnrichBody ok = %v, want %v (%s)", ok, tt.ok, got)
			}
			if !ok {
				if string(got) != tt.body {
					t.Errorf("EnrichBody changed a body it did not enrich: %q", got)
				}
				return
			}
			want := strings.Replace(tt.want, "KV", kv, 1)
			if string(got) != want {
				t.Errorf("EnrichBody =\n%s\nwant\n%s", got, want)
			}
			if !json.Valid(got) {
				t.Error("result is not JSON")
			}
		})
	}
	if got, ok := EnrichBody([]byte(`{"a":1}`), nil); ok || string(got) != `{"a":1}` {
		t.Errorf("nil diagnosis: %q, %v", got, ok)
	}
	big := []byte(`{"a":"` + strings.Repeat("x", kvwire.MaxErrorBody) + `"}`)
	if got, ok := EnrichBody(big, d); ok || len(got) != len(big) {
		t.Errorf("a body over 1 MiB must be left alone")
	}
	if !strings.Contains(kv, "<vault-name>") || !strings.Contains(kv, "x <&> y") {
		t.Errorf("the diagnosis should be written without HTML escaping: %s", kv)
	}
}

func FuzzDiagnose(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "cases", "*.json"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var c diagCase
		if err := json.Unmarshal(raw, &c); err != nil {
			f.Fatal(err)
		}
		f.Add(c.Status == http.StatusForbidden, c.Header["WWW-Authenticate"], c.Header["x-ms-keyvault-network-info"],
			c.Header["x-ms-request-id"], c.Body, c.Method+" "+c.Path, c.Vault, c.Identity.TenantID+";"+c.Identity.ObjectID, c.VaultTenantID, int64(0))
	}
	for _, c := range loadCorpus(f) {
		f.Add(c.Status == http.StatusForbidden, c.Headers["WWW-Authenticate"], c.Headers["x-ms-keyvault-network-info"],
			c.Headers["x-ms-request-id"], c.Body, c.Method+" "+c.Path, c.host(), c.claim("tid")+";"+c.claim("oid"), "", int64(0))
	}
	f.Fuzz(func(t *testing.T, forbidden bool, challenge, netInfo, requestID, body, request, vault, identity, vaultTenant string, skew int64) {
		status := http.StatusUnauthorized
		if forbidden {
			status = http.StatusForbidden
		}
		method, path, _ := strings.Cut(request, " ")
		tid, oid, _ := strings.Cut(identity, ";")
		ch, _ := kvwire.ParseChallenge(challenge)
		in := Input{
			Status: status, Body: []byte(body), Challenge: ch, NetworkInfo: netInfo, RequestID: requestID,
			Method: method, Path: path, Vault: vault, VaultTenantID: vaultTenant, Scope: vault, Now: diagTestNow,
			Token: kvwire.Claims{TenantID: tid, ObjectID: oid, AppID: oid, Audience: vault,
				ExpiresAt: diagTestNow.Add(time.Duration(skew)), NotBefore: diagTestNow.Add(-time.Duration(skew))},
		}
		d := Diagnose(in)
		if d == nil {
			t.Fatal("Diagnose = nil for a 401/403")
		}
		diagCheckInvariants(t, d)
		if out, ok := EnrichBody(in.Body, d); ok && !json.Valid(out) {
			t.Fatalf("EnrichBody made invalid JSON: %q", out)
		}
	})
}

func FuzzEnrichBody(f *testing.F) {
	for _, s := range []string{
		`{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nAction: 'x'","innererror":{"code":"ForbiddenByRbac"}}}`,
		`{"kvproxy":1,"a":[1,2,{"b":null}],"\u006bvproxy":2}`,
		` { "a" : "\ud800" , "b" : -0.0e-0 } `,
		`{"a":1,"a":2}`,
		`[1]`, `null`, `{`, ``, `"x"`,
	} {
		f.Add([]byte(s), "forbidden-by-rbac")
	}
	f.Fuzz(func(t *testing.T, body []byte, code string) {
		d := &Diagnosis{Code: code, Detail: "detail", Vault: "v"}
		in := bytes.Clone(body)
		out, ok := EnrichBody(body, d)
		if !bytes.Equal(body, in) {
			t.Fatal("EnrichBody modified its input")
		}
		if !ok {
			if !bytes.Equal(out, body) {
				t.Fatalf("not enriched, yet changed: %q -> %q", body, out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON: %q", out)
		}
		var before, after map[string]json.RawMessage
		if err := json.Unmarshal(body, &before); err != nil {
			t.Fatalf("enriched a body that is not an object: %q", body)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output is not an object: %q", out)
		}
		var got struct {
			Diagnosis string `json:"diagnosis"`
		}
		var wantCode string
		b, _ := json.Marshal(code)
		json.Unmarshal(b, &wantCode) //nolint:errcheck // a marshalled string
		if err := json.Unmarshal(after["kvproxy"], &got); err != nil || got.Diagnosis != wantCode {
			t.Fatalf("kvproxy.diagnosis = %q (%v), want %q", got.Diagnosis, err, code)
		}
		delete(before, "kvproxy")
		delete(after, "kvproxy")
		if len(before) != len(after) {
			t.Fatalf("members %d -> %d", len(before), len(after))
		}
		for k, v := range before {
			if !bytes.Equal(after[k], v) {
				t.Fatalf("member %q changed: %s -> %s", k, v, after[k])
			}
		}
	})
}

func TestDiagnoseThrottledAndUnavailable(t *testing.T) {
	throttled := []byte(`{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received."}}`)
	tests := []struct {
		name   string
		in     Input
		code   string
		has    []string
		hasNot []string
	}{
		{"a throttled secret read", Input{Status: 429, Body: throttled, Path: "/secrets/x", Vault: "v.vault.azure.net", Retries: 2},
			VaultThrottled, []string{"the vault answered 429", "(Throttled)", "2 more times", "KVPROXY_CACHE_TTL) so reads"}, nil},
		{"a throttled sign", Input{Status: 429, Body: throttled, Path: "/keys/k/sign", Vault: "v.vault.azure.net", Retries: 1},
			VaultThrottled, []string{"once more", "Spread the operations out"}, []string{"KVPROXY_CACHE_TTL) so reads"}},
		{"a throttled HSM", Input{Status: 429, Path: "/keys/k/sign", Vault: "h.managedhsm.azure.net"},
			VaultThrottled, []string{"the Managed HSM answered 429", "Key Vault Managed HSM limits"}, []string{"again after"}},
		{"a 500 after a 503", Input{Status: 500, Vault: "v.vault.azure.net", Retries: 1, FirstStatus: 503},
			VaultUnavailable, []string{"(its first answer was 503) after kvproxy sent the request once more"}, []string{"again"}},
		{"a 500", Input{Status: 500, Body: []byte(`{"error":{"code":"InternalServerError"}}`), Vault: "v.vault.azure.net"},
			VaultUnavailable, []string{"500 Internal Server Error (InternalServerError)", "Retry with a backoff"}, []string{"may or may not"}},
		{"a 503 to a write", Input{Status: 503, Method: "PUT", Vault: "v.vault.azure.net", Body: []byte("<html>busy</html>")},
			VaultUnavailable, []string{"503 Service Unavailable", "may or may not have been carried out"}, []string{"(", "again after"}},
		{"a 504 from an HSM", Input{Status: 504, Vault: "h.managedhsm.azure.net"},
			VaultUnavailable, []string{"the Managed HSM answered 504", "Key Vault Managed HSM in its region"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(tt.in)
			if d == nil || d.Code != tt.code {
				t.Fatalf("Diagnose = %+v, want code %s", d, tt.code)
			}
			for _, s := range tt.has {
				if !strings.Contains(d.Detail, s) {
					t.Errorf("detail %q lacks %q", d.Detail, s)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(d.Detail, s) {
					t.Errorf("detail %q has %q", d.Detail, s)
				}
			}
		})
	}
}
