package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/kvwire"
)

// corpusAnswer is what this test reads of a diagnose/testdata/corpus case
// (the format is in that directory's README.md).
type corpusAnswer struct {
	file         string
	VaultURL     string            `json:"vault_url"`
	Method       string            `json:"method"`
	Path         string            `json:"path"`
	Status       int               `json:"status"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	TokenClaims  map[string]any    `json:"token_claims"`
	ExpectedCode string            `json:"expected_code"`
}

// scope is the token scope kvproxy would have used for the case, as the
// diagnosis package's replay reckons it: the one the token's aud names when
// it is an https URL, else the one the vault host implies.
func (c corpusAnswer) scope() string {
	if aud, _ := c.TokenClaims["aud"].(string); aud != "" {
		if u, err := url.Parse(aud); err == nil && u.Scheme == "https" && u.Host != "" {
			return strings.TrimSuffix(aud, "/") + "/.default"
		}
	}
	host, _, _ := strings.Cut(strings.TrimPrefix(c.VaultURL, "https://"), "/")
	if s, ok := kvwire.ScopeForVaultHost(host); ok {
		return s
	}
	return vaultScope
}

// requestPath is the case's path with its placeholders (<name>, [x])
// escaped, so the request reaches the vault as the source sent it.
func (c corpusAnswer) requestPath() string {
	segs := strings.Split(c.Path, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// corpusVault is the stub vault: a request without a token gets the
// challenge for resource; one with a token gets the current answer, its
// status, headers and body verbatim (Content-Length is left to net/http,
// which sets it from the body: several cases are truncated bodies whose
// recorded length is the untruncated one).
type corpusVault struct {
	resource string

	mu  sync.Mutex
	cur *corpusAnswer
}

func (v *corpusVault) set(c *corpusAnswer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cur = c
}

func (v *corpusVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	c := v.cur
	v.mu.Unlock()
	if r.Header.Get("Authorization") == "" || c == nil {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+azfake.DefaultTenantID+`", resource="`+v.resource+`"`)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`))
		return
	}
	for k, val := range c.Headers {
		if !strings.EqualFold(k, "Content-Length") {
			w.Header().Set(k, val)
		}
	}
	w.WriteHeader(c.Status)
	_, _ = w.Write([]byte(c.Body))
}

// TestCorpusThroughTheBinary replays every real answer of the corpus
// through the kvproxy binary: the client must get the case's diagnosis in
// X-Kvproxy-Diagnosis and the vault's body intact, apart from the added
// "kvproxy" member of a JSON object body. One kvproxy for vault cases and
// one for Managed HSM cases (each with the scope it would use), all cases
// sequentially.
func TestCorpusThroughTheBinary(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "diagnose", "testdata", "corpus", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	var cases []*corpusAnswer
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := &corpusAnswer{file: filepath.Base(f)}
		if err := json.Unmarshal(raw, c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases = append(cases, c)
	}

	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	type target struct {
		vault *corpusVault
		kv    *proc
	}
	targets := map[string]*target{}
	for _, scope := range []string{vaultScope, "https://managedhsm.azure.net/.default"} {
		stub := &corpusVault{resource: kvwire.ResourceFromScope(scope)}
		srv := httptest.NewUnstartedServer(stub)
		srv.TLS = f.TLS.ServerConfig.Clone()
		srv.StartTLS()
		t.Cleanup(srv.Close)
		kv := startKV(t, f, map[string]string{"KVPROXY_VAULT_URL": srv.URL, "KVPROXY_TOKEN_SCOPE": scope})
		targets[scope] = &target{stub, kv}
	}

	right := 0
	for _, c := range cases {
		ok := t.Run(strings.TrimSuffix(c.file, ".json"), func(t *testing.T) {
			tg := targets[c.scope()]
			if tg == nil {
				tg = targets[vaultScope]
			}
			tg.vault.set(c)
			defer tg.vault.set(nil)
			method := c.Method
			if method == "" {
				method = http.MethodGet
			}
			var body io.Reader
			if method == http.MethodPut || method == http.MethodPost || method == http.MethodPatch {
				body = strings.NewReader(`{}`)
			}
			r := tg.kv.do(t, method, c.requestPath(), md(), body)
			if r.Status != c.Status {
				t.Errorf("status %d, want the vault's %d", r.Status, c.Status)
			}
			if got := r.Header.Get("X-Kvproxy-Diagnosis"); got != c.ExpectedCode {
				t.Errorf("X-Kvproxy-Diagnosis %q, want %q; body %s", got, c.ExpectedCode, r.Body)
			}
			if r.ContentLength >= 0 && r.ContentLength != int64(len(r.Body)) {
				t.Errorf("Content-Length %d, body %d bytes", r.ContentLength, len(r.Body))
			}
			checkCorpusBody(t, []byte(c.Body), r.Body, c.ExpectedCode)
		})
		if ok {
			right++
		}
	}
	t.Logf("corpus through the binary: %d of %d cases right", right, len(cases))
}

// checkCorpusBody asserts the client got the vault's body: byte for byte
// when it is not a JSON object, else every member kept byte for byte and in
// order, followed by one "kvproxy" member naming the diagnosis.
func checkCorpusBody(t *testing.T, sent, got []byte, code string) {
	t.Helper()
	before, isObject := kvwire.ObjectMembers(sent)
	if !isObject {
		if !bytes.Equal(sent, got) {
			t.Errorf("the vault's body was changed:\n%q\n->\n%q", sent, got)
		}
		return
	}
	after, ok := kvwire.ObjectMembers(got)
	if !ok || len(after) != len(before)+1 || after[len(after)-1].Key != "kvproxy" {
		t.Fatalf("the body is not the vault's plus one kvproxy member:\n%s", got)
	}
	for i, m := range before {
		if after[i].Key != m.Key || !bytes.Equal(after[i].Value, m.Value) {
			t.Errorf("member %d changed: %q:%s -> %q:%s", i, m.Key, m.Value, after[i].Key, after[i].Value)
		}
	}
	var d diagnosis
	if err := json.Unmarshal(after[len(after)-1].Value, &d); err != nil || d.Diagnosis != code || d.Detail == "" {
		t.Errorf("kvproxy member %s (%v), want diagnosis %q with a detail", after[len(after)-1].Value, err, code)
	}
}
