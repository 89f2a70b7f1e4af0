package clientauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// issuer is a local TLS OIDC issuer serving discovery and a key set that a
// test can change.
type issuer struct {
	srv        *httptest.Server
	mu         sync.Mutex
	keys       []jose.JSONWebKey // public keys served
	priv       map[string]any    // kid → private key
	jwksHits   atomic.Int32
	discHits   atomic.Int32
	authSeen   []string
	wantBearer string // when set, requests without it get 401
	down       atomic.Bool
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{priv: map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.discHits.Add(1)
		if !is.admit(w, r) {
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/openid/v1/jwks"})
	})
	mux.HandleFunc("/openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.jwksHits.Add(1)
		if !is.admit(w, r) {
			return
		}
		is.mu.Lock()
		defer is.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: is.keys})
	})
	is.srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) admit(w http.ResponseWriter, r *http.Request) bool {
	is.mu.Lock()
	is.authSeen = append(is.authSeen, r.Header.Get("Authorization"))
	want := is.wantBearer
	is.mu.Unlock()
	if is.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return false
	}
	if want != "" && r.Header.Get("Authorization") != "Bearer "+want {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return false
	}
	return true
}

// addRSA generates an RSA key, serves its public half under kid.
func (is *issuer) addRSA(t *testing.T, kid string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.add(kid, k, &k.PublicKey, "RS256")
}

func (is *issuer) addEC(t *testing.T, kid string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is.add(kid, k, &k.PublicKey, "ES256")
}

func (is *issuer) add(kid string, priv, pub any, alg string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.priv[kid] = priv
	is.keys = append(is.keys, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"})
}

func (is *issuer) remove(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	var keep []jose.JSONWebKey
	for _, k := range is.keys {
		if k.KeyID != kid {
			keep = append(keep, k)
		}
	}
	is.keys = keep
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// claims are what the test mints: the standard ones plus Kubernetes'.
type claims struct {
	jwt.Claims
	Kubernetes map[string]any `json:"kubernetes.io,omitempty"`
}

func (is *issuer) validClaims(c *clock) claims {
	now := c.now()
	return claims{Claims: jwt.Claims{
		Issuer:    is.srv.URL,
		Subject:   "system:serviceaccount:apps:web",
		Audience:  jwt.Audience{"kvproxy"},
		Expiry:    jwt.NewNumericDate(now.Add(time.Hour)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
	}, Kubernetes: map[string]any{"namespace": "apps", "serviceaccount": map[string]string{"name": "web", "uid": "1"}}}
}

// mint signs cl with the private key of kid (signKid, when set, is the key
// actually used while kid is the header's).
func (is *issuer) mint(t *testing.T, kid string, cl claims, signKid ...string) string {
	t.Helper()
	use := kid
	if len(signKid) > 0 {
		use = signKid[0]
	}
	is.mu.Lock()
	priv := is.priv[use]
	is.mu.Unlock()
	alg := jose.RS256
	if _, ok := priv.(*ecdsa.PrivateKey); ok {
		alg = jose.ES256
	}
	return mintWith(t, alg, priv, kid, cl)
}

func mintWith(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, cl claims) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(sig).Claims(cl).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (is *issuer) verifier(t *testing.T, c *clock, mod func(*Options)) *Verifier {
	t.Helper()
	o := Options{Issuer: is.srv.URL, HTTPClient: is.srv.Client(), Now: c.now}
	if mod != nil {
		mod(&o)
	}
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// wantReason checks err's reason and that no part of the token leaks.
func wantReason(t *testing.T, err error, want Reason, raw string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %s", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is no *Error", err)
	}
	if e.Reason != want {
		t.Errorf("reason %s (%v), want %s", e.Reason, err, want)
	}
	checkNoLeak(t, err.Error(), raw)
}

func checkNoLeak(t *testing.T, s, raw string) {
	t.Helper()
	if raw == "" {
		return
	}
	if strings.Contains(s, raw) {
		t.Fatalf("error quotes the token: %s", s)
	}
	for _, part := range strings.Split(raw, ".") {
		if len(part) >= 16 && strings.Contains(s, part) {
			t.Fatalf("error quotes part of the token: %s", s)
		}
	}
}

func TestVerify(t *testing.T) {
	is := newIssuer(t)
	is.addRSA(t, "rsa-1")
	is.addEC(t, "ec-1")
	c := newClock()
	v := is.verifier(t, c, nil)
	ctx := context.Background()

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	hmacKey := []byte("0123456789abcdef0123456789abcdef")

	tests := []struct {
		name  string
		token func() string
		want  Reason // "" for accepted
	}{
		{"valid RS256", func() string { return is.mint(t, "rsa-1", is.validClaims(c)) }, ""},
		{"valid ES256", func() string { return is.mint(t, "ec-1", is.validClaims(c)) }, ""},
		{"audience among several", func() string {
			cl := is.validClaims(c)
			cl.Audience = jwt.Audience{"https://kubernetes.default.svc", "kvproxy"}
			return is.mint(t, "rsa-1", cl)
		}, ""},
		{"expired within leeway", func() string {
			cl := is.validClaims(c)
			cl.Expiry = jwt.NewNumericDate(c.now().Add(-20 * time.Second))
			return is.mint(t, "rsa-1", cl)
		}, ""},
		{"missing", func() string { return "" }, ReasonMissing},
		{"garbage", func() string { return "not a token" }, ReasonMalformed},
		{"five parts (JWE)", func() string { return "a.b.c.d.e" }, ReasonMalformed},
		{"header not base64", func() string { return "!!!.e30.sig" }, ReasonMalformed},
		{"too long", func() string { return strings.Repeat("a", MaxTokenBytes+1) }, ReasonMalformed},
		{"expired", func() string {
			cl := is.validClaims(c)
			cl.Expiry = jwt.NewNumericDate(c.now().Add(-time.Minute))
			return is.mint(t, "rsa-1", cl)
		}, ReasonExpired},
		{"not yet valid", func() string {
			cl := is.validClaims(c)
			cl.NotBefore = jwt.NewNumericDate(c.now().Add(time.Minute))
			return is.mint(t, "rsa-1", cl)
		}, ReasonNotYetValid},
		{"issued in the future", func() string {
			cl := is.validClaims(c)
			cl.IssuedAt = jwt.NewNumericDate(c.now().Add(time.Minute))
			return is.mint(t, "rsa-1", cl)
		}, ReasonNotYetValid},
		{"no exp", func() string {
			cl := is.validClaims(c)
			cl.Expiry = nil
			return is.mint(t, "rsa-1", cl)
		}, ReasonMalformed},
		{"wrong audience", func() string {
			cl := is.validClaims(c)
			cl.Audience = jwt.Audience{"https://kubernetes.default.svc"}
			return is.mint(t, "rsa-1", cl)
		}, ReasonWrongAudience},
		{"wrong issuer", func() string {
			cl := is.validClaims(c)
			cl.Issuer = "https://other.example"
			return is.mint(t, "rsa-1", cl)
		}, ReasonUnknownIssuer},
		{"issuer with a trailing slash", func() string {
			cl := is.validClaims(c)
			cl.Issuer = is.srv.URL + "/"
			return is.mint(t, "rsa-1", cl)
		}, ReasonUnknownIssuer},
		{"unknown key", func() string { return mintWith(t, jose.RS256, other, "rsa-9", is.validClaims(c)) }, ReasonUnknownKey},
		{"bad signature: known kid, other key", func() string { return mintWith(t, jose.RS256, other, "rsa-1", is.validClaims(c)) }, ReasonBadSignature},
		{"alg of the token differs from the key's", func() string { return is.mint(t, "ec-1", is.validClaims(c), "rsa-1") }, ReasonBadSignature},
		{"no kid, other key", func() string { return mintWith(t, jose.RS256, other, "", is.validClaims(c)) }, ReasonBadSignature},
		{"HS256", func() string { return mintWith(t, jose.HS256, hmacKey, "rsa-1", is.validClaims(c)) }, ReasonUnsupportedAlgorithm},
		{"alg none", func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"rsa-1"}`))
			b, _ := json.Marshal(is.validClaims(c))
			return h + "." + base64.RawURLEncoding.EncodeToString(b) + "."
		}, ReasonUnsupportedAlgorithm},
		{"subject not a service account", func() string {
			cl := is.validClaims(c)
			cl.Subject = "admin"
			return is.mint(t, "rsa-1", cl)
		}, ReasonMalformed},
		{"subject with a wildcard", func() string {
			cl := is.validClaims(c)
			cl.Subject = "system:serviceaccount:apps:*"
			return is.mint(t, "rsa-1", cl)
		}, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.token()
			id, err := v.Verify(ctx, raw)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if id != (Identity{Subject: "system:serviceaccount:apps:web", Namespace: "apps", Name: "web"}) {
					t.Errorf("identity %+v", id)
				}
				return
			}
			wantReason(t, err, tt.want, raw)
		})
	}
	// Unknown keys and foreign issuers cost one fetch per interval at most:
	// the clock did not move, so the first fetch was the only one.
	if n := is.jwksHits.Load(); n != 1 {
		t.Errorf("%d key fetches, want 1", n)
	}
}

func TestKeyRotation(t *testing.T) {
	is := newIssuer(t)
	is.addRSA(t, "k1")
	c := newClock()
	v := is.verifier(t, c, nil)
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.mint(t, "k1", is.validClaims(c))); err != nil {
		t.Fatal(err)
	}
	c.advance(11 * time.Second)
	is.addRSA(t, "k2")
	// Many requests with the new kid at once share one refetch.
	raw := is.mint(t, "k2", is.validClaims(c))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := v.Verify(ctx, raw)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("rotated key refused: %v", err)
		}
	}
	if n := is.jwksHits.Load(); n != 2 {
		t.Errorf("%d key fetches, want 2 (one at start, one for the new kid)", n)
	}
	// Another unknown kid within the interval does not reach the issuer.
	is.addRSA(t, "k3")
	raw3 := is.mint(t, "k3", is.validClaims(c))
	_, err := v.Verify(ctx, raw3)
	wantReason(t, err, ReasonUnknownKey, raw3)
	if n := is.jwksHits.Load(); n != 2 {
		t.Errorf("%d key fetches within the refetch interval, want 2", n)
	}
	c.advance(DefaultRefetchInterval)
	if _, err := v.Verify(ctx, raw3); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
	// A withdrawn key stops working once the keys are older than KeyMaxAge.
	is.remove("k1")
	c.advance(DefaultKeyMaxAge)
	raw1 := is.mint(t, "k1", is.validClaims(c))
	_, err = v.Verify(ctx, raw1)
	wantReason(t, err, ReasonUnknownKey, raw1)
}

func TestIssuerUnreachable(t *testing.T) {
	is := newIssuer(t)
	is.addRSA(t, "k1")
	c := newClock()
	v := is.verifier(t, c, nil)
	ctx := context.Background()
	raw := is.mint(t, "k1", is.validClaims(c))

	is.down.Store(true)
	_, err := v.Verify(ctx, raw)
	wantReason(t, err, ReasonIssuerUnreachable, raw)
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("error does not say why: %v", err)
	}
	// Within the interval, requests fail fast without asking the issuer.
	hits := is.discHits.Load()
	_, err = v.Verify(ctx, raw)
	wantReason(t, err, ReasonIssuerUnreachable, raw)
	if is.discHits.Load() != hits {
		t.Error("a failed fetch was retried within the refetch interval")
	}
	is.down.Store(false)
	c.advance(DefaultRefetchInterval)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// Keys past KeyMaxAge whose refetch fails stay in use.
	is.down.Store(true)
	c.advance(DefaultKeyMaxAge)
	if _, err := v.Verify(ctx, is.mint(t, "k1", is.validClaims(c))); err != nil {
		t.Fatalf("held keys dropped when the refresh failed: %v", err)
	}
}

func TestTokenFile(t *testing.T) {
	is := newIssuer(t)
	is.addRSA(t, "k1")
	is.wantBearer = "api-token-1"
	c := newClock()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("api-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := is.verifier(t, c, func(o *Options) { o.TokenFile = file })
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.mint(t, "k1", is.validClaims(c))); err != nil {
		t.Fatal(err)
	}
	// The kubelet rotates the file; the next fetch sends the new token.
	if err := os.WriteFile(file, []byte("api-token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.wantBearer = "api-token-2"
	is.mu.Unlock()
	c.advance(DefaultRefetchInterval)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	seen := append([]string(nil), is.authSeen...)
	is.mu.Unlock()
	want := []string{"Bearer api-token-1", "Bearer api-token-1", "Bearer api-token-2", "Bearer api-token-2"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization sent %q, want %q", seen, want)
	}

	// Without the token file the in-cluster issuer answers 401: the error says what to set.
	v2 := is.verifier(t, c, nil)
	err := v2.Refresh(ctx)
	if err == nil || !strings.Contains(err.Error(), "KVPROXY_CLIENT_AUTH_TOKEN_FILE") {
		t.Errorf("401 from the issuer: %v", err)
	}
	if strings.Contains(err.Error(), "api-token") {
		t.Errorf("error quotes the API token: %v", err)
	}
}

func TestDiscoveryChecks(t *testing.T) {
	tests := []struct {
		name string
		doc  func(url string) map[string]string
		want string
	}{
		{"other issuer", func(u string) map[string]string {
			return map[string]string{"issuer": "https://evil.example", "jwks_uri": u + "/keys"}
		}, "names the issuer"},
		{"plain http keys", func(u string) map[string]string {
			return map[string]string{"issuer": u, "jwks_uri": "http://127.0.0.1:1/keys"}
		}, "no https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(tt.doc(srv.URL))
			}))
			defer srv.Close()
			v, err := NewVerifier(Options{Issuer: srv.URL, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNewVerifierOptions(t *testing.T) {
	for _, iss := range []string{"", "http://kubernetes.default.svc", "https://", "https://x?y=1", "https://u:p@x"} {
		if _, err := NewVerifier(Options{Issuer: iss}); err == nil {
			t.Errorf("issuer %q accepted", iss)
		}
	}
	v, err := NewVerifier(Options{Issuer: "https://kubernetes.default.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Audience() != "kvproxy" || v.Issuer() != "https://kubernetes.default.svc.cluster.local" {
		t.Errorf("audience %q issuer %q", v.Audience(), v.Issuer())
	}
	// The CA beside the token file is trusted (Kubernetes' layout).
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(Options{Issuer: "https://k", TokenFile: filepath.Join(dir, "token")}); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("a bad ca.crt beside the token file: err = %v", err)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"bearer", "Bearer abc", "abc"},
		{"lower case", "bearer abc", "abc"},
		{"spaces", "  Bearer   abc  ", "abc"},
		{"basic", "Basic abc", ""},
		{"empty", "", ""},
		{"scheme only", "Bearer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BearerToken(tt.in); got != tt.want {
				t.Errorf("BearerToken(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		sub    string
		ok     bool
		ns, sa string
	}{
		{"system:serviceaccount:apps:web", true, "apps", "web"},
		{"system:serviceaccount:a-b:x.y-z", true, "a-b", "x.y-z"},
		{"system:serviceaccount:apps:", false, "", ""},
		{"system:serviceaccount::web", false, "", ""},
		{"system:serviceaccount:apps:web:extra", false, "", ""},
		{"system:serviceaccount:Apps:web", false, "", ""},
		{"system:serviceaccount:apps:*", false, "", ""},
		{"system:node:n1", false, "", ""},
		{"system:serviceaccount:apps:we b", false, "", ""},
	}
	for _, tt := range tests {
		id, ok := ParseSubject(tt.sub)
		if ok != tt.ok || id.Namespace != tt.ns || id.Name != tt.sa {
			t.Errorf("ParseSubject(%q) = %+v, %v", tt.sub, id, ok)
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] || r == "" || strings.ContainsAny(string(r), " _") {
			t.Errorf("reason %q duplicate or not a kebab-case word", r)
		}
		seen[r] = true
	}
	if len(seen) != 10 {
		t.Errorf("%d reasons", len(seen))
	}
	if ReasonOf(errors.New("x")) != "" || ReasonOf(refuse(ReasonExpired, "")) != ReasonExpired {
		t.Error("ReasonOf")
	}
}
