package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// TestHappyPath reads, writes and lists secrets through the binary and
// checks what the vault received: the identity endpoint's token instead of
// the client's, no Metadata header, an api-version.
func TestHappyPath(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	p := startKV(t, f, nil)
	p.waitReady(t, 20*time.Second)

	t.Run("get replaces the client's Authorization", func(t *testing.T) {
		f.Vault.ResetRequests()
		h := md()
		h.Set("Authorization", "Bearer client-supplied-token")
		h.Set("Proxy-Authorization", "Basic Y2xpZW50OnNlY3JldA==")
		h.Set("X-Kvproxy-Diagnosis", "spoofed-by-the-client")
		r := p.do(t, http.MethodGet, "/secrets/db-password", h, nil)
		if got := decodeSecret(t, r).Value; got != seededValue {
			t.Errorf("value %q, want %q", got, seededValue)
		}
		reqs := f.Vault.Requests()
		if len(reqs) != 1 {
			t.Fatalf("vault received %d requests, want 1", len(reqs))
		}
		got := reqs[0]
		if got.Method != http.MethodGet || got.Path != "/secrets/db-password" {
			t.Errorf("vault received %s %s", got.Method, got.Path)
		}
		if q, _ := url.ParseQuery(got.RawQuery); q.Get("api-version") != "7.5" || len(q["api-version"]) != 1 {
			t.Errorf("vault query %q, want one api-version=7.5", got.RawQuery)
		}
		if got.Token == "" || got.Token == "client-supplied-token" {
			t.Fatalf("vault received token %q, want the brokered one", got.Token)
		}
		if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+got.Token {
			t.Errorf("vault received Authorization %q, want exactly one bearer token", v)
		}
		c := got.Claims
		if c == nil {
			t.Fatal("the token the vault received is not one the identity fake minted (bad signature)")
		}
		if c.Audience != "https://vault.azure.net" || c.TenantID != azfake.DefaultTenantID ||
			c.ObjectID != azfake.DefaultObjectID || c.AppID != azfake.DefaultAppID {
			t.Errorf("token claims aud=%s tid=%s oid=%s appid=%s; want the identity endpoint's system-assigned identity for https://vault.azure.net",
				c.Audience, c.TenantID, c.ObjectID, c.AppID)
		}
		if !c.ExpiresAt.After(time.Now()) {
			t.Errorf("token expired at %v", c.ExpiresAt)
		}
		if d := r.Header.Get("X-Kvproxy-Diagnosis"); d != "" {
			t.Errorf("a 200 carries X-Kvproxy-Diagnosis %q", d)
		}
		for _, k := range []string{"Metadata", "Proxy-Authorization", "X-Kvproxy-Diagnosis"} {
			if v, ok := got.Header[k]; ok {
				t.Errorf("vault received header %s: %q", k, v)
			}
		}
		if n, issued := f.IDs.Requests(), f.IDs.Issued(); n != 1 || issued != 1 {
			t.Errorf("identity endpoint saw %d requests and issued %d tokens, want 1 and 1", n, issued)
		}
	})

	t.Run("the client's api-version is kept", func(t *testing.T) {
		f.Vault.ResetRequests()
		decodeSecret(t, p.get(t, "/secrets/api-key?api-version=7.4"))
		reqs := f.Vault.Requests()
		if len(reqs) != 1 || reqs[0].RawQuery != "api-version=7.4" {
			t.Fatalf("vault requests %+v, want one with query api-version=7.4", reqs)
		}
	})

	t.Run("head", func(t *testing.T) {
		f.Vault.ResetRequests()
		r := p.do(t, http.MethodHead, "/secrets/db-password", md(), nil)
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Errorf("HEAD: %d with %d body bytes", r.Status, len(r.Body))
		}
		if reqs := tokenRequests(f.Vault); len(reqs) != 1 || reqs[0].Method != http.MethodHead {
			t.Errorf("vault requests %+v, want one HEAD", reqs)
		}
	})

	t.Run("put then get", func(t *testing.T) {
		f.Vault.ResetRequests()
		body := []byte(`{"value":"put-value-e2e","contentType":"text/plain"}`)
		h := md()
		h.Set("Content-Type", "application/json")
		put := decodeSecret(t, p.do(t, http.MethodPut, "/secrets/e2e-put", h, bytes.NewReader(body)))
		if put.Value != "put-value-e2e" {
			t.Errorf("PUT answered value %q", put.Value)
		}
		if got := decodeSecret(t, p.get(t, "/secrets/e2e-put")).Value; got != "put-value-e2e" {
			t.Errorf("GET after PUT: value %q", got)
		}
		reqs := f.Vault.Requests()
		if len(reqs) != 2 || reqs[0].Method != http.MethodPut || !bytes.Equal(reqs[0].Body, body) {
			t.Fatalf("vault requests %+v, want the PUT with the client's body, then a GET", reqs)
		}
	})

	t.Run("list follows nextLink through the proxy", func(t *testing.T) {
		for _, n := range []string{"list-a", "list-b", "list-c"} {
			f.Vault.SetSecret(n, "v-"+n)
		}
		f.Vault.ResetRequests()
		var names []string
		path := "/secrets?maxresults=2"
		pages := 0
		for path != "" {
			pages++
			if pages > 20 {
				t.Fatal("more than 20 pages")
			}
			r := p.get(t, path)
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
			}
			var page struct {
				Value []struct {
					ID string `json:"id"`
				} `json:"value"`
				NextLink *string `json:"nextLink"`
			}
			if err := json.Unmarshal(r.Body, &page); err != nil {
				t.Fatalf("list body: %v\n%s", err, r.Body)
			}
			if r.ContentLength >= 0 && r.ContentLength != int64(len(r.Body)) {
				t.Errorf("Content-Length %d, body %d bytes", r.ContentLength, len(r.Body))
			}
			for _, it := range page.Value {
				names = append(names, it.ID[strings.LastIndex(it.ID, "/")+1:])
			}
			path = ""
			if page.NextLink != nil {
				u, err := url.Parse(*page.NextLink)
				if err != nil {
					t.Fatalf("nextLink %q: %v", *page.NextLink, err)
				}
				if u.Scheme != "http" || u.Host != p.Listen || u.Path != "/secrets" {
					t.Fatalf("nextLink %q does not point at the proxy (http://%s/secrets)", *page.NextLink, p.Listen)
				}
				if strings.Contains(*page.NextLink, f.vaultHostPort()) {
					t.Fatalf("nextLink %q names the vault", *page.NextLink)
				}
				path = u.RequestURI()
			}
		}
		slices.Sort(names)
		want := []string{"api-key", "db-password", "e2e-put", "list-a", "list-b", "list-c"}
		if !slices.Equal(names, want) {
			t.Errorf("listed %v, want %v", names, want)
		}
		if pages != 3 {
			t.Errorf("%d pages, want 3 of at most 2", pages)
		}
		if n := len(tokenRequests(f.Vault)); n != pages {
			t.Errorf("vault received %d authenticated requests for %d pages", n, pages)
		}
	})
}

// TestRefusalsNeverReachTheVault sends every request kvproxy must refuse and
// checks the answer and that nothing reached the vault.
func TestRefusalsNeverReachTheVault(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	const limit = 1024
	limitEnv := map[string]string{"KVPROXY_MAX_BODY_BYTES": fmt.Sprint(limit)}
	procs := map[string]*proc{
		"writable": startKV(t, f, limitEnv),
		"readonly": startKV(t, f, map[string]string{"KVPROXY_READ_ONLY": "true", "KVPROXY_MAX_BODY_BYTES": fmt.Sprint(limit)}),
	}
	for _, p := range procs {
		p.waitReady(t, 20*time.Second)
	}
	f.Vault.ResetRequests()
	big := strings.Repeat("x", 2*limit)
	vaultHost := f.vaultHostPort()

	tests := []struct {
		name   string
		proc   string
		method string
		path   string
		header http.Header
		body   func() io.Reader
		raw    string // sent over TCP as is, instead of method/path
		status int
		diag   string
	}{
		{name: "no Metadata header", proc: "writable", method: "GET", path: "/secrets/db-password",
			status: 400, diag: "metadata-header-missing"},
		{name: "Metadata false", proc: "writable", method: "GET", path: "/secrets/db-password",
			header: http.Header{"Metadata": {"false"}}, status: 400, diag: "metadata-header-missing"},
		{name: "no Metadata header on a write", proc: "writable", method: "PUT", path: "/secrets/x",
			body: func() io.Reader { return strings.NewReader(`{"value":"v"}`) }, status: 400, diag: "metadata-header-missing"},
		{name: "read-only PUT", proc: "readonly", method: "PUT", path: "/secrets/x", header: md(),
			body: func() io.Reader { return strings.NewReader(`{"value":"v"}`) }, status: 405, diag: "read-only"},
		{name: "read-only DELETE", proc: "readonly", method: "DELETE", path: "/secrets/db-password", header: md(),
			status: 405, diag: "read-only"},
		{name: "read-only POST", proc: "readonly", method: "POST", path: "/secrets/db-password/backup", header: md(),
			status: 405, diag: "read-only"},
		{name: "read-only PATCH", proc: "readonly", method: "PATCH", path: "/secrets/db-password/abc", header: md(),
			body: func() io.Reader { return strings.NewReader(`{}`) }, status: 405, diag: "read-only"},
		{name: "body over the limit with Content-Length", proc: "writable", method: "PUT", path: "/secrets/big", header: md(),
			body: func() io.Reader { return strings.NewReader(big) }, status: 413, diag: "body-too-large"},
		{name: "body over the limit chunked", proc: "writable", method: "PUT", path: "/secrets/big", header: md(),
			// Hiding the length makes net/http send the body chunked.
			body: func() io.Reader { return io.MultiReader(strings.NewReader(big)) }, status: 413, diag: "body-too-large"},
		{name: "body one byte over the limit chunked", proc: "writable", method: "PUT", path: "/secrets/big", header: md(),
			body: func() io.Reader { return io.MultiReader(strings.NewReader(strings.Repeat("y", limit+1))) }, status: 413, diag: "body-too-large"},
		{name: "CONNECT", proc: "writable",
			raw:    "CONNECT " + vaultHost + " HTTP/1.1\r\nHost: " + vaultHost + "\r\nMetadata: true\r\n\r\n",
			status: 405, diag: "method-not-allowed"},
		{name: "TRACE", proc: "writable",
			raw:    "TRACE /secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
			status: 405, diag: "method-not-allowed"},
		{name: "absolute-form target at the vault", proc: "writable",
			raw:    "GET https://" + vaultHost + "/secrets/db-password HTTP/1.1\r\nHost: " + vaultHost + "\r\nMetadata: true\r\n\r\n",
			status: 400, diag: "invalid-request-target"},
		{name: "absolute-form target elsewhere", proc: "writable",
			raw:    "GET http://example.com/secrets/db-password HTTP/1.1\r\nHost: example.com\r\nMetadata: true\r\n\r\n",
			status: 400, diag: "invalid-request-target"},
		{name: "double-slash path", proc: "writable",
			raw:    "GET //example.com/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
			status: 400, diag: "invalid-request-target"},
		{name: "double-slash path naming the vault", proc: "writable",
			raw:    "GET //" + vaultHost + "/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
			status: 400, diag: "invalid-request-target"},
		{name: "asterisk target", proc: "writable",
			raw:    "GET * HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
			status: 400, diag: "invalid-request-target"},
		{name: "read-only refuses before the body is read", proc: "readonly",
			raw:    "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Length: 13\r\n\r\n{\"value\":\"v\"}",
			status: 405, diag: "read-only"},
	}
	counts := map[string]map[string]int{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := procs[tc.proc]
			var r response
			if tc.raw != "" {
				r = rawRequest(t, p.Listen, tc.raw)
			} else {
				var body io.Reader
				if tc.body != nil {
					body = tc.body()
				}
				r = p.do(t, tc.method, tc.path, tc.header, body)
			}
			checkRefusal(t, r, tc.status, tc.diag)
			if counts[tc.proc] == nil {
				counts[tc.proc] = map[string]int{}
			}
			counts[tc.proc][tc.diag]++
			if reqs := f.Vault.Requests(); len(reqs) != 0 {
				t.Fatalf("the vault received %d requests, first %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
			}
		})
	}

	t.Run("diagnoses are counted", func(t *testing.T) {
		for name, p := range procs {
			mfs := p.metricsOf(t)
			for diag, n := range counts[name] {
				if got := metric(mfs, "kvproxy_diagnoses_total", map[string]string{"diagnosis": diag}); got != float64(n) {
					t.Errorf("%s: kvproxy_diagnoses_total{diagnosis=%q} = %v, want %d", name, diag, got, n)
				}
			}
		}
	})

	// The same processes do forward what they should: the refusals above
	// are refusals, not a vault nobody could reach.
	t.Run("control: allowed requests reach the vault", func(t *testing.T) {
		f.Vault.ResetRequests()
		decodeSecret(t, procs["readonly"].get(t, "/secrets/db-password"))
		h := md()
		h.Set("Content-Type", "application/json")
		body := `{"value":"` + strings.Repeat("z", limit-len(`{"value":""}`)) + `"}`
		if len(body) != limit {
			t.Fatalf("control body is %d bytes", len(body))
		}
		decodeSecret(t, procs["writable"].do(t, http.MethodPut, "/secrets/at-limit", h, io.MultiReader(strings.NewReader(body))))
		if n := len(f.Vault.Requests()); n != 2 {
			t.Errorf("the vault received %d requests, want 2", n)
		}
	})
}

// hostSpy is a server standing for "another host": it records every request.
type hostSpy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []string
}

func newHostSpy(t *testing.T, f *fakes, useTLS bool) *hostSpy {
	s := &hostSpy{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits = append(s.hits, r.Method+" "+r.RequestURI+" Authorization="+r.Header.Get("Authorization"))
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"value":"from-the-other-host"}`) //nolint:errcheck
	})
	s.srv = httptest.NewUnstartedServer(h)
	if useTLS {
		// Signed by the CA kvproxy trusts: were kvproxy tricked into
		// connecting, the handshake would succeed and the spy would see it.
		s.srv.TLS = f.TLS.ServerConfig.Clone()
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *hostSpy) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

// TestNoRequestLeavesForAnotherHost tries the ways a client could point
// kvproxy at another host; the other host must never be contacted.
func TestNoRequestLeavesForAnotherHost(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	plain := newHostSpy(t, f, false)
	secure := newHostSpy(t, f, true)
	other := strings.TrimPrefix(plain.srv.URL, "http://")
	otherTLS := strings.TrimPrefix(secure.srv.URL, "https://")
	p := startKV(t, f, nil)
	p.waitReady(t, 20*time.Second)

	hdr := func(kv ...string) http.Header {
		h := md()
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		path   string
		header http.Header
		raw    string
		// status is what the client gets: the vault's answer when kvproxy
		// forwards to its vault anyway, else kvproxy's refusal.
		status int
	}{
		{name: "Host header", path: "/secrets/db-password", header: hdr("Host", otherTLS), status: 200},
		{name: "Host header plain", path: "/secrets/db-password", header: hdr("Host", other), status: 200},
		{name: "X-Forwarded-Host", path: "/secrets/db-password", header: hdr("X-Forwarded-Host", otherTLS, "X-Forwarded-Proto", "https"), status: 200},
		{name: "Forwarded", path: "/secrets/db-password", header: hdr("Forwarded", "host="+otherTLS+";proto=https"), status: 200},
		{name: "X-Original-URL", path: "/secrets/db-password", header: hdr("X-Original-URL", "https://"+otherTLS+"/x", "X-Rewrite-URL", "https://"+otherTLS+"/x"), status: 200},
		{name: "at-sign in the path", path: "/@" + otherTLS + "/secrets/db-password", status: 404},
		{name: "at-sign host in the Host header", raw: "GET /secrets/db-password HTTP/1.1\r\nHost: " + f.vaultHostPort() + "@" + otherTLS + "\r\nMetadata: true\r\n\r\n", status: 0},
		{name: "absolute-form target", raw: "GET https://" + otherTLS + "/secrets/db-password HTTP/1.1\r\nHost: " + otherTLS + "\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "absolute-form target plain", raw: "GET http://" + other + "/secrets/db-password HTTP/1.1\r\nHost: " + other + "\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "absolute-form with userinfo", raw: "GET https://" + f.vaultHostPort() + "@" + otherTLS + "/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "scheme-relative target", raw: "GET //" + otherTLS + "/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "scheme-relative target with userinfo", raw: "GET //" + f.vaultHostPort() + "@" + otherTLS + "/secrets/db-password HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", status: 400},
		{name: "backslashes", raw: "GET /\\\\" + otherTLS + "/secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n", status: 0},
		{name: "foreign Host (DNS rebinding)", raw: "GET /secrets/db-password HTTP/1.1\r\nHost: rebound.attacker.example\r\nMetadata: true\r\n\r\n", status: 421},
		{name: "encoded slashes", path: "/%2F%2F" + otherTLS + "/secrets/db-password", status: 0},
		{name: "CONNECT to the other host", raw: "CONNECT " + otherTLS + " HTTP/1.1\r\nHost: " + otherTLS + "\r\nMetadata: true\r\n\r\n", status: 405},
		{name: "URL in the query", path: "/secrets/db-password?url=https://" + otherTLS + "/&api-version=7.5", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.Vault.ResetRequests()
			var r response
			if tc.raw != "" {
				r = rawRequest(t, p.Listen, tc.raw)
			} else {
				h := tc.header
				if h == nil {
					h = md()
				}
				r = p.do(t, http.MethodGet, tc.path, h, nil)
			}
			if tc.status != 0 && r.Status != tc.status {
				t.Errorf("status %d, want %d; body %s", r.Status, tc.status, r.Body)
			}
			if bytes.Contains(r.Body, []byte("from-the-other-host")) {
				t.Errorf("the answer came from the other host: %s", r.Body)
			}
			if r.Status == http.StatusOK {
				if got := decodeSecret(t, r).Value; got != seededValue {
					t.Errorf("value %q, want the vault's %q", got, seededValue)
				}
				if len(tokenRequests(f.Vault)) != 1 {
					t.Errorf("answered 200 but the vault saw %d authenticated requests", len(tokenRequests(f.Vault)))
				}
			}
			for _, s := range []*hostSpy{plain, secure} {
				if hits := s.seen(); len(hits) > 0 {
					t.Fatalf("the other host %s was contacted: %q", s.srv.URL, hits)
				}
			}
		})
	}
}
