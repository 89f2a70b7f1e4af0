package clientauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxDocumentBytes bounds a discovery document or key set read from the issuer.
const maxDocumentBytes = 1 << 20

// keySet is an immutable snapshot of the issuer's signing keys.
type keySet struct {
	keys      []jose.JSONWebKey
	fetchedAt time.Time
}

// byID returns the keys with the given kid (all keys for an empty kid).
func (ks *keySet) byID(kid string) []jose.JSONWebKey {
	if ks == nil {
		return nil
	}
	if kid == "" {
		return ks.keys
	}
	var out []jose.JSONWebKey
	for _, k := range ks.keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// discovery is the part of an OIDC discovery document kvproxy reads.
type discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// fetchKeys reads the discovery document, then the key set it names.
func (v *Verifier) fetchKeys(ctx context.Context) (*keySet, error) {
	var d discovery
	if err := v.getJSON(ctx, v.discoveryURL, &d); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if d.Issuer != v.o.Issuer {
		return nil, fmt.Errorf("discovery at %s names the issuer %q, want %q", v.discoveryURL, d.Issuer, v.o.Issuer)
	}
	u, err := url.Parse(d.JWKSURI)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("discovery at %s: jwks_uri %q is no https URL", v.discoveryURL, d.JWKSURI)
	}
	var raw json.RawMessage
	if err := v.getJSON(ctx, u.String(), &raw); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	keys, err := ParseKeySet(raw)
	if err != nil {
		return nil, fmt.Errorf("keys at %s: %w", u, err)
	}
	return &keySet{keys: keys, fetchedAt: v.now()}, nil
}

// getJSON GETs u with the bearer token of Options.TokenFile (read afresh:
// the kubelet rotates it) and decodes a bounded JSON body into dst.
func (v *Verifier) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if v.o.TokenFile != "" {
		b, err := os.ReadFile(v.o.TokenFile)
		if err != nil {
			// The path is the operator's; the error names no token.
			return fmt.Errorf("reading the token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return fmt.Errorf("the token file %s is empty", v.o.TokenFile)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (the issuer wants a bearer token: KVPROXY_CLIENT_AUTH_TOKEN_FILE, allowed by the ClusterRole system:service-account-issuer-discovery)"
		}
		return fmt.Errorf("GET %s: %s%s", u, resp.Status, hint)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("GET %s: body over %d bytes", u, maxDocumentBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// ParseKeySet reads a JWK Set (RFC 7517) and returns its public signing
// keys. Keys of other uses, private or symmetric keys, and keys go-jose
// cannot read are skipped, so one odd key does not hide the others; a set
// with no usable key is an error.
func ParseKeySet(b []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	var out []jose.JSONWebKey
	for _, raw := range set.Keys {
		// Look before go-jose parses: a private or symmetric key is
		// skipped unread (validating a private key is costly).
		var peek struct {
			Kty string `json:"kty"`
			D   string `json:"d"`
		}
		if json.Unmarshal(raw, &peek) != nil || peek.D != "" || (peek.Kty != "RSA" && peek.Kty != "EC" && peek.Kty != "OKP") {
			continue
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		if k.Algorithm != "" && !acceptedAlg(k.Algorithm) {
			continue
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("no public signing key")
	}
	return out, nil
}
