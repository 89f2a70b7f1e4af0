package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/metrics"
)

// FuzzServeHTTP feeds raw HTTP requests to the proxy. Whatever the client
// sends, kvproxy must not panic, must answer, and anything it forwards must
// go to the configured vault with kvproxy's token and without the client's
// Authorization or Metadata headers.
func FuzzServeHTTP(f *testing.F) {
	seeds := []string{
		"GET /secrets/a HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
		"GET http://evil.example/secrets/a HTTP/1.1\r\nHost: evil.example\r\nMetadata: true\r\n\r\n",
		"GET //evil.example/secrets HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
		"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nMetadata: true\r\n\r\n",
		"PUT /secrets/a?api-version=7.5 HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nContent-Length: 5\r\nAuthorization: Bearer theirs\r\n\r\nhello",
		"POST /keys/k/sign HTTP/1.1\r\nHost: x\r\nMetadata: TRUE\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET /@evil.example/%2e%2e/secrets?api-version=&api-version=1 HTTP/1.1\r\nHost: evil.example\r\nMetadata: true\r\nX-Forwarded-Host: evil.example\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	vault := &url.URL{Scheme: "https", Host: "myvault.vault.azure.net"}
	var mu sync.Mutex
	var sent []*http.Request
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		sent = append(sent, r)
		mu.Unlock()
		if r.Body != nil {
			io.Copy(io.Discard, r.Body) //nolint:errcheck
		}
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	})
	p, err := New(Options{Vault: vault, Tokens: &staticTokens{tok: "kvproxy-token"}, Transport: rt,
		RequireMetadata: true, MaxBodyBytes: 64, Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http would have answered 400 itself
		}
		mu.Lock()
		sent = sent[:0]
		mu.Unlock()
		w := httptest.NewRecorder()
		p.ServeHTTP(w, req)
		if w.Code == 0 {
			t.Fatal("no answer")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, out := range sent {
			if out.URL.Scheme != "https" || out.URL.Host != vault.Host || out.Host != "" && out.Host != vault.Host {
				t.Fatalf("forwarded to %s (Host %q) for %q", out.URL, out.Host, raw)
			}
			if got := out.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer kvproxy-token" {
				t.Fatalf("Authorization %q forwarded for %q", got, raw)
			}
			if out.Header.Get("Metadata") != "" {
				t.Fatalf("Metadata forwarded for %q", raw)
			}
		}
		if len(sent) > 0 && w.Code >= 400 && w.Header().Get(HeaderDiagnosis) == diagnose.MetadataHeaderMissing {
			t.Fatalf("refused request was forwarded: %q", raw)
		}
	})
}
