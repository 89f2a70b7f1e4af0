package azfake

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// signingKey signs every token the fakes mint. It is public by design: the
// tokens are only good against the fakes in this package.
var signingKey = []byte("kvproxy-azfake-signing-key; not a secret, tokens are fake")

// jwtHeader is the fixed, already encoded JOSE header of every fake token.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

var (
	errMalformedToken = errors.New("azfake: malformed token")
	errBadSignature   = errors.New("azfake: token signature is invalid")
)

// TokenClaims are the claims of a fake Entra access token.
type TokenClaims struct {
	TenantID string // tid
	ObjectID string // oid (and sub)
	AppID    string // appid and azp
	Audience string // aud
	// Issuer is iss; MintToken defaults it to "https://sts.windows.net/<TenantID>/".
	Issuer string
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp, in whole seconds.
	// MintToken defaults IssuedAt to now, NotBefore to IssuedAt and ExpiresAt
	// to an hour after IssuedAt.
	IssuedAt, NotBefore, ExpiresAt time.Time
	MIResourceID                   string // xms_mirid, optional
}

// wireClaims is the JSON payload of a fake token.
type wireClaims struct {
	Aud      string `json:"aud"`
	Iss      string `json:"iss"`
	Iat      int64  `json:"iat"`
	Nbf      int64  `json:"nbf"`
	Exp      int64  `json:"exp"`
	AppID    string `json:"appid"`
	Azp      string `json:"azp"`
	Oid      string `json:"oid"`
	Sub      string `json:"sub"`
	Tid      string `json:"tid"`
	Uti      string `json:"uti"`
	Ver      string `json:"ver"`
	XMSMirID string `json:"xms_mirid,omitempty"`
}

// stsIssuer is the v1 issuer Entra ID writes into access tokens of tenant tid.
func stsIssuer(tid string) string { return "https://sts.windows.net/" + tid + "/" }

// MintToken returns a JWT (header {"alg":"HS256","typ":"JWT"}, base64url without
// padding) with the claims tid, oid, sub (= oid), appid, azp (= AppID), aud,
// iss, iat, nbf, exp (unix seconds), ver "1.0", xms_mirid when set, and a
// random "uti" so that two tokens minted in the same second differ. It is
// signed with HMAC-SHA256 under this package's fixed key.
func MintToken(c TokenClaims) string {
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.IssuedAt.Add(time.Hour)
	}
	if c.Issuer == "" {
		c.Issuer = stsIssuer(c.TenantID)
	}
	var uti [16]byte
	_, _ = rand.Read(uti[:]) // crypto/rand.Read never fails
	payload, err := json.Marshal(wireClaims{
		Aud:      c.Audience,
		Iss:      c.Issuer,
		Iat:      c.IssuedAt.Unix(),
		Nbf:      c.NotBefore.Unix(),
		Exp:      c.ExpiresAt.Unix(),
		AppID:    c.AppID,
		Azp:      c.AppID,
		Oid:      c.ObjectID,
		Sub:      c.ObjectID,
		Tid:      c.TenantID,
		Uti:      base64.RawURLEncoding.EncodeToString(uti[:]),
		Ver:      "1.0",
		XMSMirID: c.MIResourceID,
	})
	if err != nil {
		panic(fmt.Sprintf("azfake: marshal claims: %v", err)) // only strings and ints: cannot happen
	}
	signed := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signed + "." + sign(signed)
}

func sign(signed string) string {
	m := hmac.New(sha256.New, signingKey)
	m.Write([]byte(signed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ParseToken verifies the signature of a token made by [MintToken] and returns
// its claims. It does not check audience, issuer or lifetime. It fails on a
// malformed token and on a bad signature.
func ParseToken(tok string) (TokenClaims, error) {
	header, payload, sig, ok := splitJWT(tok)
	if !ok {
		return TokenClaims{}, errMalformedToken
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(header, &h); err != nil {
		return TokenClaims{}, errMalformedToken
	}
	var w wireClaims
	if err := decodeSegment(payload, &w); err != nil {
		return TokenClaims{}, errMalformedToken
	}
	want := sign(header + "." + payload)
	if h.Alg != "HS256" || !hmac.Equal([]byte(sig), []byte(want)) {
		return TokenClaims{}, errBadSignature
	}
	return TokenClaims{
		TenantID:     w.Tid,
		ObjectID:     w.Oid,
		AppID:        w.AppID,
		Audience:     w.Aud,
		Issuer:       w.Iss,
		IssuedAt:     time.Unix(w.Iat, 0).UTC(),
		NotBefore:    time.Unix(w.Nbf, 0).UTC(),
		ExpiresAt:    time.Unix(w.Exp, 0).UTC(),
		MIResourceID: w.XMSMirID,
	}, nil
}

// splitJWT splits a compact JWS into its three segments.
func splitJWT(tok string) (header, payload, sig string, ok bool) {
	header, rest, ok1 := strings.Cut(tok, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || header == "" || payload == "" || strings.Contains(sig, ".") {
		return "", "", "", false
	}
	return header, payload, sig, true
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// unverifiedSubject returns the sub claim of any JWT without checking its
// signature, or "" when tok is not a JWT. Entra quotes it in AADSTS700213.
func unverifiedSubject(tok string) string {
	_, payload, _, ok := splitJWT(tok)
	if !ok {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if decodeSegment(payload, &c) != nil {
		return ""
	}
	return c.Sub
}
