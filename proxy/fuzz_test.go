package proxy

import (
	"bufio"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/metrics"
)

// FuzzServeHTTP feeds raw HTTP requests to the proxy's server. Whatever the
// client sends, kvproxy must not panic, must answer, and anything it
// forwards must go to the configured vault with kvproxy's token, none of the
// client's Authorization, Metadata, Upgrade or other headers outside the
// allowlist, and nothing for a request it refused.
func FuzzServeHTTP(f *testing.F) {
	seeds := []string{
		"GET /secrets/a HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
		"GET http://evil.example/secrets/a HTTP/1.1\r\nHost: evil.example\r\nMetadata: true\r\n\r\n",
		"GET //evil.example/secrets HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
		"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nMetadata: true\r\n\r\n",
		"PUT /secrets/a?api-version=7.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Length: 5\r\nAuthorization: Bearer theirs\r\n\r\nhello",
		"POST /keys/k/sign HTTP/1.1\r\nHost: localhost\r\nMetadata: TRUE\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
		"PUT /secrets/a HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /secrets/b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /secrets/a HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
		"GET /@evil.example/%2e%2e/secrets?api-version=&api-version=1;x HTTP/1.1\r\nHost: evil.example\r\nMetadata: true\r\nX-Forwarded-Host: evil.example\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	var mu sync.Mutex
	var sent []*http.Request
	vault := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		mu.Lock()
		sent = append(sent, r)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"value":"v"}`) //nolint:errcheck
	}))
	defer vault.Close()
	vu, _ := url.Parse(vault.URL)
	pool := x509.NewCertPool()
	pool.AddCert(vault.Certificate())
	p, err := New(Options{Vault: vu, Tokens: &staticTokens{tok: "kvproxy-token"}, RootCAs: pool,
		RequireMetadata: true, MaxBodyBytes: 64, UpstreamTimeout: 5 * time.Second,
		AllowedHosts: []string{"x"}, Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		f.Fatal(err)
	}
	srv := p.Server(ServerOptions{CheckHost: true, ReadTimeout: 2 * time.Second})
	allowed := map[string]bool{"Authorization": true, "Host": true, "Content-Length": true, "Accept-Encoding": true}
	for _, h := range headersToVault {
		allowed[http.CanonicalHeaderKey(h)] = true
	}
	f.Fuzz(func(t *testing.T, raw string) {
		mu.Lock()
		sent = sent[:0]
		mu.Unlock()
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { srv.ServeConn(server); close(done) }() //nolint:errcheck // a bad request ends the connection
		client.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { io.WriteString(client, raw) }() //nolint:errcheck
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		answered := err == nil
		var diag string
		if answered {
			diag = resp.Header.Get(HeaderDiagnosis)
			io.Copy(io.Discard, resp.Body) //nolint:errcheck
			resp.Body.Close()
		}
		client.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, out := range sent {
			if out.Host != vu.Host {
				t.Fatalf("forwarded with Host %q for %q", out.Host, raw)
			}
			if got := out.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer kvproxy-token" {
				t.Fatalf("Authorization %q forwarded for %q", got, raw)
			}
			for k := range out.Header {
				if !allowed[k] {
					t.Fatalf("header %s forwarded for %q", k, raw)
				}
			}
		}
		if answered && len(sent) > 0 && diag != "" && diag != diagnose.UpstreamUnavailable {
			t.Fatalf("refused request (%s) was forwarded: %q", diag, raw)
		}
	})
}
