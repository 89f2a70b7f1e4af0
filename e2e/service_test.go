package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// oidcIssuer is a local TLS stand-in for a cluster's service-account token
// issuer: OIDC discovery and a JWKS with keys the test makes, and tokens
// the test mints.
type oidcIssuer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
}

func newOIDCIssuer(t *testing.T) *oidcIssuer {
	t.Helper()
	is := &oidcIssuer{keys: map[string]*rsa.PrivateKey{}}
	is.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/openid/v1/jwks"}) //nolint:errcheck
		case "/openid/v1/jwks":
			is.mu.Lock()
			var set jose.JSONWebKeySet
			for kid, k := range is.keys {
				set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
			}
			is.mu.Unlock()
			json.NewEncoder(w).Encode(set) //nolint:errcheck
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(is.srv.Close)
	is.addKey(t, "k1")
	return is
}

func (is *oidcIssuer) addKey(t *testing.T, kid string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.keys[kid] = k
	is.mu.Unlock()
}

// mint signs a ServiceAccount-shaped token.
func (is *oidcIssuer) mint(t *testing.T, kid, iss, aud, sub string, exp time.Time) string {
	t.Helper()
	is.mu.Lock()
	k := is.keys[kid]
	is.mu.Unlock()
	if k == nil { // a key the issuer does not publish
		var err error
		if k, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: iss, Audience: jwt.Audience{aud}, Subject: sub,
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(exp)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// servingCert writes a certificate for 127.0.0.1 and its key, and returns
// a pool trusting it.
func servingCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kvproxy.security.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"kvproxy.security.svc"}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)    //nolint:errcheck
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600) //nolint:errcheck
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestSharedService runs kvproxy as the shared service: TLS on the proxy
// listener, Kubernetes client identity against a local issuer, a
// per-subject policy and the audit log, all driven from outside.
func TestSharedService(t *testing.T) {
	t.Parallel()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	is := newOIDCIssuer(t)
	dir := t.TempDir()
	certFile, keyFile, pool := servingCert(t, dir)
	// The issuer's CA beside the token file, as Kubernetes lays out the
	// service-account folder.
	saDir := filepath.Join(dir, "sa")
	os.MkdirAll(saDir, 0o755)                                                                                                                 //nolint:errcheck
	os.WriteFile(filepath.Join(saDir, "token"), []byte("kvproxy-own-api-token"), 0o600)                                                       //nolint:errcheck
	os.WriteFile(filepath.Join(saDir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.srv.Certificate().Raw}), 0o644) //nolint:errcheck
	policyFile := filepath.Join(dir, "policy.yaml")
	writePolicy := func(rules string) {
		t.Helper()
		tmp := policyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, policyFile); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy(`rules:
  - subjects: ["system:serviceaccount:apps:web"]
    methods: [GET]
    paths: ["/secrets/db-*"]
`)
	p := startKV(t, f, map[string]string{
		"KVPROXY_TLS_CERT_FILE": certFile, "KVPROXY_TLS_KEY_FILE": keyFile,
		"KVPROXY_CLIENT_AUTH": "kubernetes", "KVPROXY_CLIENT_AUTH_ISSUER": is.srv.URL,
		"KVPROXY_CLIENT_AUTH_TOKEN_FILE": filepath.Join(saDir, "token"),
		"KVPROXY_ACCESS_POLICY_FILE":     policyFile, "KVPROXY_AUDIT_LOG": "true",
	})
	p.waitReady(t, 20*time.Second)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	requests := 0
	get := func(path, token string) response {
		t.Helper()
		requests++
		req, _ := http.NewRequest("GET", "https://"+p.Listen+path, nil)
		req.Header.Set("Metadata", "true")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		r, err := doRequest(client, req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return r
	}
	exp := time.Now().Add(time.Hour)
	web := is.mint(t, "k1", is.srv.URL, "kvproxy", "system:serviceaccount:apps:web", exp)

	// Over plain HTTP nothing is served.
	if r, err := p.try("GET", "/secrets/db-password", md(), nil); err == nil && r.Status == 200 {
		t.Fatal("the TLS listener answered plain HTTP with a secret")
	}
	// An allowed subject reads an allowed secret over TLS.
	if r := get("/secrets/db-password", web); r.Status != 200 || !strings.Contains(string(r.Body), "correct-horse") {
		t.Fatalf("allowed read: %d %s", r.Status, r.Body)
	}
	// Key rotation: a new kid appears at the issuer; an unknown kid makes
	// kvproxy refetch the keys, at most once per 10s (the start-up fetch
	// counts), so the new key is accepted within that bound.
	is.addKey(t, "k2")
	rotated := is.mint(t, "k2", is.srv.URL, "kvproxy", "system:serviceaccount:apps:web", exp)
	azfaketest.Eventually(t, 20*time.Second, "a token signed with the rotated key accepted", func() (bool, string) {
		r := get("/secrets/db-password", rotated)
		return r.Status == 200, string(r.Body)
	})
	vaultSaw := len(f.Vault.Requests())
	for _, tt := range []struct {
		name, path, token string
		status            int
		diag              string
	}{
		{"denied path", "/secrets/app-config", web, 403, "client-not-allowed"},
		{"no token", "/secrets/db-password", "", 401, "client-unauthenticated"},
		{"expired", "/secrets/db-password", is.mint(t, "k1", is.srv.URL, "kvproxy", "system:serviceaccount:apps:web", time.Now().Add(-time.Hour)), 401, "client-unauthenticated"},
		{"wrong audience", "/secrets/db-password", is.mint(t, "k1", is.srv.URL, "https://kubernetes.default.svc", "system:serviceaccount:apps:web", exp), 401, "client-unauthenticated"},
		{"wrong issuer", "/secrets/db-password", is.mint(t, "k1", "https://evil.example", "kvproxy", "system:serviceaccount:apps:web", exp), 401, "client-unauthenticated"},
		{"unknown key", "/secrets/db-password", is.mint(t, "k9", is.srv.URL, "kvproxy", "system:serviceaccount:apps:web", exp), 401, "client-unauthenticated"},
	} {
		r := get(tt.path, tt.token)
		if r.Status != tt.status || r.Header.Get("X-Kvproxy-Diagnosis") != tt.diag {
			t.Errorf("%s: %d %q: %s", tt.name, r.Status, r.Header.Get("X-Kvproxy-Diagnosis"), r.Body)
		}
		if tt.token != "" && strings.Contains(string(r.Body), tt.token) {
			t.Errorf("%s: the client's token was echoed", tt.name)
		}
		if tt.diag == "client-not-allowed" && !strings.Contains(string(r.Body), "system:serviceaccount:apps:web") {
			t.Errorf("%s: the denial does not name the subject: %s", tt.name, r.Body)
		}
	}
	if n := len(f.Vault.Requests()); n != vaultSaw {
		t.Errorf("refused requests reached the vault (%d more)", n-vaultSaw)
	}
	// Policy reload: the path is allowed once the file says so.
	writePolicy(`rules:
  - subjects: ["system:serviceaccount:apps:*"]
    paths: ["/secrets/db-*", "/secrets/app-config"]
`)
	p.waitLog(t, func(l logLine) bool { return l.Msg() == "access policy reloaded" }, 30*time.Second, "the policy reload")
	if r := get("/secrets/app-config", web); r.Status == 403 {
		t.Errorf("after the reload the path is still denied: %s", r.Body)
	}
	// A bad reload keeps the rules in force.
	writePolicy("rules: [{subjects: [], paths: nonsense}]\n")
	p.waitLog(t, func(l logLine) bool { return strings.HasPrefix(l.Msg(), "access policy not reloaded") }, 30*time.Second, "the refused reload")
	if r := get("/secrets/db-password", web); r.Status != 200 {
		t.Errorf("after a bad reload: %d %s", r.Status, r.Body)
	}

	// The audit log names the subject, never a token or a value; one line
	// per request (the log is read through a pipe: wait for the last ones).
	azfaketest.Eventually(t, 10*time.Second, "an audit line per request", func() (bool, string) {
		n := 0
		for _, l := range p.logLines() {
			if l.Msg() == "audit" {
				n++
			}
		}
		return n == requests, fmt.Sprintf("%d audit lines for %d requests", n, requests)
	})
	for _, l := range p.logLines() {
		if l.Msg() != "audit" {
			continue
		}
		line, _ := json.Marshal(l)
		if strings.Contains(string(line), web[:40]) || strings.Contains(string(line), "correct-horse") || strings.Contains(string(line), "kvproxy-own-api-token") {
			t.Errorf("audit line holds a token or a value: %s", line)
		}
	}
	found := false
	for _, l := range p.logLines() {
		if l.Msg() == "audit" && l.Str("client") == "system:serviceaccount:apps:web" && l.Str("path") == "/secrets/app-config" {
			found = true
		}
	}
	if !found {
		t.Error("no audit line names the subject and the path")
	}
	mfs := p.metricsOf(t)
	for result, min := range map[string]float64{"allowed": 3, "denied": 1, "unauthenticated": 5} {
		if v := metric(mfs, "kvproxy_client_requests_total", map[string]string{"result": result}); v < min {
			t.Errorf("kvproxy_client_requests_total{result=%s} = %v, want >= %v", result, v, min)
		}
	}
}
