package clientauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// FuzzVerify: whatever a client sends, Verify returns an identity only for
// a token signed by the issuer's key, and otherwise an *Error with a known
// reason that does not quote the input. The keys are held already, so no
// request leaves the process.
func FuzzVerify(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const iss = "https://issuer.invalid"
	v, err := NewVerifier(Options{Issuer: iss, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	v.keys.Store(&keySet{keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}, fetchedAt: now})
	v.lastFetch = now
	v.lastErr = errRateLimited

	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	good, _ := jwt.Signed(sig).Claims(jwt.Claims{Issuer: iss, Subject: "system:serviceaccount:apps:web",
		Audience: jwt.Audience{"kvproxy"}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Serialize()
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("")
	known := map[Reason]bool{}
	for _, r := range Reasons() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := v.Verify(context.Background(), raw)
		if err == nil {
			if raw != good || id.Subject != "system:serviceaccount:apps:web" {
				t.Fatalf("accepted %q as %+v", raw, id)
			}
			return
		}
		r := ReasonOf(err)
		if !known[r] || r == ReasonIssuerUnreachable {
			t.Fatalf("reason %q for %q: %v", r, raw, err)
		}
		if len(raw) >= 24 && strings.Contains(err.Error(), raw) {
			t.Fatalf("error quotes the input: %v", err)
		}
	})
}

// FuzzParseKeySet: any key set body either yields public signing keys of
// accepted algorithms or an error, never a panic or a private key.
func FuzzParseKeySet(f *testing.F) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k", Algorithm: "RS256", Use: "sig"}}})
	f.Add(b)
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "p"}}})
	f.Add(priv)
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseKeySet(b)
		if err != nil {
			return
		}
		for _, k := range keys {
			if !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
				t.Fatalf("kept %+v", k)
			}
		}
	})
}
