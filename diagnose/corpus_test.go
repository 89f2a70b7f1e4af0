package diagnose

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
)

// corpusCase is one file of testdata/corpus: a refusal a real vault or
// Managed HSM gave, with its source and what kvproxy must make of it (the
// format is described in testdata/corpus/README.md).
type corpusCase struct {
	file string

	Source struct {
		Kind   string `json:"kind"`
		Repo   string `json:"repo"`
		Path   string `json:"path"`
		Commit string `json:"commit"`
		URL    string `json:"url"`
	} `json:"source"`
	Rebuilt        bool              `json:"rebuilt"`
	VaultURL       string            `json:"vault_url"`
	Method         string            `json:"method"`
	Path           string            `json:"path"`
	Status         int               `json:"status"`
	Headers        map[string]string `json:"headers"`
	Body           string            `json:"body"`
	TokenClaims    map[string]any    `json:"token_claims"`
	Cause          string            `json:"cause"`
	ExpectedCode   string            `json:"expected_code"`
	DetailMentions []string          `json:"detail_mentions"`
	Notes          string            `json:"notes"`
}

// corpusNow is the clock of the corpus replay: none of the corpus tokens
// names an expiry, so any fixed date does.
var corpusNow = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)

// loadCorpus reads every case of testdata/corpus, refusing unknown fields.
func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	var out []corpusCase
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c corpusCase
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.file = filepath.Base(f)
		out = append(out, c)
	}
	return out
}

// host is the case's vault host (placeholders such as <vault> kept).
func (c corpusCase) host() string {
	h := strings.TrimPrefix(strings.TrimPrefix(c.VaultURL, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	return h
}

func (c corpusCase) hsm() bool { return kvwire.IsManagedHSM(c.host()) }

func (c corpusCase) claim(name string) string {
	s, _ := c.TokenClaims[name].(string)
	return s
}

func (c corpusCase) date(name string) time.Time {
	if f, ok := c.TokenClaims[name].(float64); ok {
		return time.Unix(int64(f), 0).UTC()
	}
	return time.Time{}
}

// input is what kvproxy would know when proxying to the case's vault: the
// answer, the request, the token's claims as far as the source shows them,
// and the scope kvproxy asked for. That scope is the one the token's aud
// says was asked for when the source shows an aud that is an https URL,
// else the one kvproxy derives from the vault host.
func (c corpusCase) input() Input {
	h := http.Header{}
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	in := Input{
		Status: c.Status, Body: []byte(c.Body),
		NetworkInfo: h.Get("x-ms-keyvault-network-info"), RequestID: h.Get("x-ms-request-id"),
		Method: cmpOr(c.Method, http.MethodGet), Path: c.Path, Vault: c.host(),
		Token: kvwire.Claims{
			TenantID: c.claim("tid"), ObjectID: c.claim("oid"), AppID: c.claim("appid"),
			Audience: c.claim("aud"), Issuer: c.claim("iss"),
			ExpiresAt: c.date("exp"), NotBefore: c.date("nbf"),
		},
		Now: corpusNow,
	}
	if v := h.Values("WWW-Authenticate"); len(v) > 0 {
		in.Challenge, _ = kvwire.ParseChallenge(strings.Join(v, ", "))
	}
	in.Scope, _ = kvwire.ScopeForVaultHost(in.Vault)
	if u, err := url.Parse(in.Token.Audience); err == nil && u.Scheme == "https" && u.Host != "" {
		in.Scope = strings.TrimSuffix(in.Token.Audience, "/") + "/.default"
	}
	return in
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestCorpus replays every real answer of testdata/corpus through Diagnose
// and EnrichBody: the code, the detail naming the cause, no token-shaped
// text in detail or fix, and the answer passing through intact apart from
// the added "kvproxy" member.
func TestCorpus(t *testing.T) {
	cases := loadCorpus(t)
	right := 0
	for _, c := range cases {
		ok := t.Run(strings.TrimSuffix(c.file, ".json"), func(t *testing.T) {
			if c.Cause == "" || c.ExpectedCode == "" || c.Source.Kind == "" {
				t.Fatalf("case without cause, expected_code or source kind")
			}
			d := Diagnose(c.input())
			if d == nil {
				t.Fatal("Diagnose = nil")
			}
			diagCheckInvariants(t, d)
			if d.Code != c.ExpectedCode {
				t.Errorf("code %q, want %q (cause: %s)\ndetail: %s", d.Code, c.ExpectedCode, c.Cause, d.Detail)
			}
			for _, m := range c.DetailMentions {
				if !strings.Contains(d.Detail, m) {
					t.Errorf("detail does not mention %q:\n%s", m, d.Detail)
				}
			}
			for name, s := range map[string]string{"detail": d.Detail, "fix": d.Fix} {
				if r := kvwire.Redact(s); r != s {
					t.Errorf("%s holds a token-shaped string: %q", name, s)
				}
			}
			// Placeholders (XXX, ***, <deleted>, {tenant 1}, the zero GUID)
			// are not tenants, and masked addresses are not addresses.
			for name, tid := range map[string]string{"identity.tid": d.Identity.TenantID,
				"expectedTenant": d.ExpectedTenant, "actualTenant": d.ActualTenant} {
				if tid != "" && kvwire.TenantID(tid) != tid {
					t.Errorf("%s %q is not a tenant", name, tid)
				}
			}
			if _, ok := parseAddr(d.ClientAddress); d.ClientAddress != "" && !ok {
				t.Errorf("clientAddress %q is not an address", d.ClientAddress)
			}
			checkPassThrough(t, []byte(c.Body), d)
			if testing.Verbose() {
				t.Logf("%s: %s | fix: %s", d.Code, d.Detail, d.Fix)
			}
		})
		if ok {
			right++
		}
	}
	t.Logf("corpus: %d of %d cases right", right, len(cases))
}

// checkPassThrough asserts that EnrichBody keeps every member of a JSON
// object body byte for byte, in order, and adds "kvproxy" last; any other
// body must come back untouched.
func checkPassThrough(t *testing.T, body []byte, d *Diagnosis) {
	t.Helper()
	out, ok := EnrichBody(body, d)
	before, isObject := kvwire.ObjectMembers(body)
	if !isObject {
		if ok || !bytes.Equal(out, body) {
			t.Fatalf("a body that is not a JSON object was changed: %q -> %q", body, out)
		}
		return
	}
	if !ok {
		t.Fatalf("a JSON object body was not enriched: %q", body)
	}
	after, _ := kvwire.ObjectMembers(out)
	if len(after) != len(before)+1 || after[len(after)-1].Key != "kvproxy" {
		t.Fatalf("enriched body does not end with the one added kvproxy member: %s", out)
	}
	for i, m := range before {
		if after[i].Key != m.Key || !bytes.Equal(after[i].Value, m.Value) {
			t.Errorf("member %d changed: %q:%s -> %q:%s", i, m.Key, m.Value, after[i].Key, after[i].Value)
		}
	}
}

// hsmCodes are the vault codes a Managed HSM can earn: it has no access
// policies and no IP firewall (only private link and trusted services).
var hsmCodes = []string{ForbiddenByPrivateLink, ForbiddenByRBAC, Forbidden, TenantMismatch, AudienceMismatch, TokenExpired, TokenRejected,
	VaultThrottled, VaultUnavailable}

// TestCorpusCoverage: every vault code has at least two corpus cases, with
// a vault and, where a Managed HSM can give it, an HSM among them; the
// README's case table lists every file.
func TestCorpusCoverage(t *testing.T) {
	cases := loadCorpus(t)
	vault, hsm := map[string]int{}, map[string]int{}
	for _, c := range cases {
		if c.hsm() {
			hsm[c.ExpectedCode]++
		} else {
			vault[c.ExpectedCode]++
		}
	}
	for _, code := range vaultCodes() {
		if n := vault[code] + hsm[code]; n < 2 {
			t.Errorf("%s: %d corpus cases, want at least 2", code, n)
		}
		if vault[code] == 0 {
			t.Errorf("%s: no vault case", code)
		}
		if slices.Contains(hsmCodes, code) && hsm[code] == 0 {
			t.Errorf("%s: no Managed HSM case", code)
		}
	}
	readme, err := os.ReadFile(filepath.Join("testdata", "corpus", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !bytes.Contains(readme, []byte("`"+c.file+"`")) {
			t.Errorf("testdata/corpus/README.md does not list %s", c.file)
		}
	}
}
