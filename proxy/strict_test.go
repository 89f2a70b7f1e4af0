package proxy

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
	"github.com/kvproxy/kvproxy/metrics"
)

// Each test here reproduces an attack that worked against the old data path
// (httputil.ReverseProxy): the request to the vault is now built from what
// Key Vault uses, so none of them can.

// rawExchange writes raw on a new connection and reads one response.
func rawExchange(t *testing.T, base, raw string) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), conn, br
}

func TestContentLengthWithTransferEncodingSmugglesNothing(t *testing.T) {
	e := setup(t, nil)
	smuggled := "GET /secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n"
	raw := "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\n\r\n" + smuggled
	resp, body, _, br := rawExchange(t, e.url, raw)
	if resp.StatusCode != 400 || resp.Header.Get(HeaderDiagnosis) != diagnose.MalformedRequest {
		t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("the bytes after the body were served as a second request")
	}
	if n := len(e.vault.Requests()); n != 0 {
		t.Fatalf("the vault saw %d requests", n)
	}
}

func TestOverLimitContentLengthIsRefusedAtOnce(t *testing.T) {
	e := setup(t, nil) // MaxBodyBytes 1024
	// The body is held back: the answer must not wait for it.
	resp, body, _, _ := rawExchange(t, e.url, "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Length: 100000\r\n\r\n")
	if resp.StatusCode != 413 || resp.Header.Get(HeaderDiagnosis) != diagnose.BodyTooLarge {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if n := len(e.vault.Requests()); n != 0 {
		t.Fatalf("the vault saw %d requests", n)
	}
}

func TestStalledBodyGetsBodyUnreadable(t *testing.T) {
	e := setup(t, nil)
	url := serveProxy(t, e.proxy, ServerOptions{CheckHost: true, ReadTimeout: 300 * time.Millisecond})
	resp, body, _, _ := rawExchange(t, url, "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Length: 10\r\n\r\nabc")
	if resp.StatusCode != 400 || resp.Header.Get(HeaderDiagnosis) != diagnose.BodyUnreadable {
		t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
	}
	if n := len(e.vault.Requests()); n != 0 {
		t.Fatalf("a partial body reached the vault (%d requests)", n)
	}
}

func TestClientTrailersNeverReachTheVault(t *testing.T) {
	e := setup(t, nil)
	raw := "PUT /secrets/trailed HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-Note\r\n\r\n" +
		"10\r\n{\"value\":\"v1\"}  \r\n0\r\nX-Note: trailing\r\n\r\n"
	resp, body, _, _ := rawExchange(t, e.url, raw)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	reqs := e.vault.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Note") != "" || reqs[0].Header.Get("Trailer") != "" {
		t.Fatalf("vault saw %+v", reqs)
	}
	// A forbidden trailer (a second Authorization) is refused whole.
	raw = "PUT /secrets/trailed HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"2\r\n{}\r\n0\r\nAuthorization: Bearer theirs\r\nHost: evil.example\r\n\r\n"
	resp, body, _, _ = rawExchange(t, e.url, raw)
	if resp.StatusCode != 400 || resp.Header.Get(HeaderDiagnosis) != diagnose.MalformedRequest {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if n := len(e.vault.Requests()); n != 1 {
		t.Fatalf("the vault saw %d requests, want still 1", n)
	}
}

func TestQueryIsForwardedByteForByte(t *testing.T) {
	e := setup(t, nil)
	var many strings.Builder
	for i := range 10001 {
		if i > 0 {
			many.WriteByte('&')
		}
		many.WriteString("p" + strconv.Itoa(i) + "=x")
	}
	// More than 10,000 parameters do not fit the 16 KiB request head: refused
	// (431, or the connection closed while the client still writes), never
	// cut short and forwarded.
	func() {
		u, _ := url.Parse(e.url)
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go io.WriteString(conn, "GET /secrets?"+many.String()+"&api-version=7.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n") //nolint:errcheck
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil && resp.StatusCode != 431 {
			t.Errorf("a 70 KB request head: status %d, want 431", resp.StatusCode)
		}
		if n := len(e.vault.Requests()); n != 0 {
			t.Errorf("a 70 KB request head reached the vault")
		}
	}()
	for _, q := range []string{
		"api-version=7.5;x=1",
		"a=%zz&api-version=7.5&a=2",
		"maxresults=1&api-version=2025-07-01&x=%3B",
		strings.Repeat("a=1&", 2000) + "api-version=7.5",
	} {
		e.vault.ResetRequests()
		e.do(t, "GET", "/secrets?"+q, nil)
		reqs := e.vault.Requests()
		if len(reqs) != 1 || reqs[0].RawQuery != q {
			got := ""
			if len(reqs) == 1 {
				got = reqs[0].RawQuery
			}
			t.Errorf("query %.60q… arrived as %.60q…", q, got)
		}
	}
	// api-version is appended only when absent.
	e.vault.ResetRequests()
	e.do(t, "GET", "/secrets?maxresults=1;x", nil)
	if r := e.vault.Requests(); len(r) != 1 || r[0].RawQuery != "maxresults=1;x&api-version=7.5" {
		t.Errorf("query %q", r[0].RawQuery)
	}
}

func TestAllowedHosts(t *testing.T) {
	e := setup(t, func(o *Options) { o.AllowedHosts = []string{"kvproxy.security.svc", "KVPROXY.example."} })
	for host, want := range map[string]int{
		"kvproxy.security.svc":       200,
		"kvproxy.security.svc:8380":  200,
		"kvproxy.example":            200,
		"localhost:8380":             200,
		"[::1]:8380":                 200,
		"10.1.2.3":                   200,
		"rebound.attacker.example":   421,
		"kvproxy.security.svc.evil":  421,
		"kvproxy.security.svc@evil.": 400, // not a host at all: fasthttp refuses it (malformed-request)
	} {
		e.vault.ResetRequests()
		resp, body := doHost(t, e.url, host)
		if resp.StatusCode != want {
			t.Errorf("Host %q: status %d, want %d: %s", host, resp.StatusCode, want, body)
		}
		if want == 421 {
			assertRefusal(t, resp, []byte(body), 421, diagnose.HostNotAllowed)
		}
		if n := len(e.vault.Requests()); want != 200 && n != 0 {
			t.Errorf("Host %q: forwarded", host)
		}
	}
	// A unix socket needs no check.
	url := serveProxy(t, e.proxy, ServerOptions{CheckHost: false})
	if resp, _ := doHost(t, url, "anything.example"); resp.StatusCode != 200 {
		t.Errorf("without the host check: status %d", resp.StatusCode)
	}
}

// doHost reads the demo secret through base with the given Host header.
func doHost(t *testing.T, base, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/secrets/db-password", nil)
	req.Host = host
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestNextLinkIsRewrittenOnlyAtTheTop(t *testing.T) {
	e := setup(t, nil)
	vaultLink := "https://" + e.vaultU.Host + "/secrets?x=1"
	put := `{"value":"v","tags":{"nextLink":"` + vaultLink + `"}}`
	if resp, body := e.do(t, "PUT", "/secrets/aaa-tagged", strings.NewReader(put), "Content-Type", "application/json"); resp.StatusCode != 200 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	_, body := e.do(t, "GET", "/secrets/aaa-tagged", nil)
	if !strings.Contains(string(body), vaultLink) {
		t.Errorf("a single item's tag named nextLink was touched: %s", body)
	}
	_, body = e.do(t, "GET", "/secrets?maxresults=1", nil)
	var page struct {
		Value []struct {
			Tags map[string]string `json:"tags"`
		} `json:"value"`
		NextLink string `json:"nextLink"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if strings.Contains(string(body), `\u0026`) {
		t.Errorf("the rewritten nextLink escapes & as \\u0026: %s", body)
	}
	if !strings.HasPrefix(page.NextLink, e.url+"/secrets?") {
		t.Errorf("list nextLink %q does not point back at kvproxy (%s)", page.NextLink, e.url)
	}
	if len(page.Value) != 1 || page.Value[0].Tags["nextLink"] != vaultLink {
		t.Errorf("a list item's tag named nextLink was touched: %s", body)
	}
}

// hostileVault is a TLS upstream whose answers a test writes.
func hostileVault(t *testing.T, h http.HandlerFunc) (*url.URL, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return u, pool
}

func TestNoTunnelOnUpgrade(t *testing.T) {
	u, pool := hostileVault(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			t.Errorf("Upgrade %q reached the vault", r.Header.Get("Upgrade"))
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n") //nolint:errcheck
		brw.Flush()                                                                                              //nolint:errcheck
		io.Copy(io.Discard, conn)                                                                                //nolint:errcheck
	})
	p, err := New(Options{Vault: u, RootCAs: pool, Tokens: &staticTokens{tok: "t0ken-opaque-1234"}, UpstreamTimeout: 2 * time.Second,
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	base := serveProxy(t, p, ServerOptions{CheckHost: true})
	resp, body, conn, _ := rawExchange(t, base, "GET /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp.StatusCode == 101 {
		t.Fatal("the client got a tunnel to the vault")
	}
	if resp.StatusCode != 502 {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
	// The connection still speaks HTTP to kvproxy, not bytes to the vault.
	io.WriteString(conn, "GET /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") //nolint:errcheck
}

func TestOpaqueTokenEchoedByTheVaultIsRedacted(t *testing.T) {
	const token = "opaque-token-0123456789abcdef" // not JWT-shaped
	u, pool := hostileVault(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"code":"Unauthorized","message":"Token `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+` is not valid."}}`) //nolint:errcheck
	})
	var logs azfaketest.SyncBuffer
	p, err := New(Options{Vault: u, RootCAs: pool, Tokens: &staticTokens{tok: token}, UpstreamTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	base := serveProxy(t, p, ServerOptions{CheckHost: true})
	req, _ := http.NewRequest("GET", base+"/secrets/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get(HeaderDiagnosis) == "" {
		t.Fatalf("status %d diagnosis %q", resp.StatusCode, resp.Header.Get(HeaderDiagnosis))
	}
	if strings.Contains(string(body), token) {
		t.Errorf("the token reached the client: %s", body)
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the token reached the log: %s", logs.String())
	}
	if !strings.Contains(string(body), `"kvproxy"`) {
		t.Errorf("no diagnosis in %s", body)
	}
}

// However many hop-by-hop headers (or a forged diagnosis) the vault sends,
// none reaches the client.
func TestVaultHopHeadersNeverReachTheClient(t *testing.T) {
	u, pool := hostileVault(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for _, k := range []string{"Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Te", "Trailer", "Upgrade", "X-Kvproxy-Diagnosis"} {
			h.Add(k, "x")
			h.Add(k, "y")
		}
		h.Set("Content-Type", "application/json")
		io.WriteString(w, `{"value":"v"}`) //nolint:errcheck
	})
	p, err := New(Options{Vault: u, RootCAs: pool, Tokens: &staticTokens{tok: "t0ken-opaque-1234"}, UpstreamTimeout: 2 * time.Second,
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(serveProxy(t, p, ServerOptions{CheckHost: true}) + "/secrets/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, k := range []string{"Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Te", "Trailer", "Upgrade", "X-Kvproxy-Diagnosis"} {
		if v := resp.Header.Values(k); len(v) != 0 {
			t.Errorf("%s %q reached the client", k, v)
		}
	}
}
