package azfake

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of tests that need one.
var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func fixedNow() time.Time { return testNow }

func newTLS(t *testing.T) *TLS {
	t.Helper()
	tl, err := NewTLS()
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// startVault starts a vault on a fixed clock and returns it with its URL and
// a client trusting it.
func startVault(t *testing.T, o VaultOptions) (*Vault, string, *http.Client) {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	tl := newTLS(t)
	v := NewVault(o)
	u, err := v.Start(tl, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	tr := tl.ClientTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return v, u, &http.Client{Transport: tr}
}

// vaultToken returns a valid token for the default vault at testNow.
func vaultToken() string {
	return MintToken(TokenClaims{
		TenantID:  DefaultTenantID,
		ObjectID:  DefaultObjectID,
		AppID:     DefaultAppID,
		Audience:  "https://vault.azure.net",
		IssuedAt:  testNow.Add(-time.Minute),
		ExpiresAt: testNow.Add(time.Hour),
	})
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// kvErr decodes a Key Vault error body.
func (r response) kvErr(t *testing.T) kvErrorDetail {
	t.Helper()
	var e kvError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
}

// do sends one request; token "" sends none.
func do(t *testing.T, c *http.Client, method, url, token, body string) response {
	t.Helper()
	return doCtx(t, context.Background(), c, method, url, token, body)
}

func doCtx(t *testing.T, ctx context.Context, c *http.Client, method, url, token, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
