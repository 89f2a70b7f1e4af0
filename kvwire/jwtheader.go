package kvwire

import (
	"encoding/json"
	"errors"
	"strings"
	"unicode"
)

// maxJWTHeaderLen bounds the encoded header [ParseJWTHeader] reads; Entra
// token headers are about 130 bytes.
const maxJWTHeaderLen = 1024

// JWTHeader is a decoded JWT (JOSE) header: what Key Vault quotes as
// EncodedJwtHeader when it cannot resolve a token's signing key (AKV10046).
// A header holds no claim and no signature: it is not a credential.
type JWTHeader struct {
	// JSON is the decoded header text, exactly as it was encoded.
	JSON string
	// Alg, KeyID (kid) and X5T (x5t, the certificate thumbprint) are its
	// members that name the signing key; "" when absent.
	Alg, KeyID, X5T string
}

// ParseJWTHeader decodes an encoded JWT header: one base64url segment
// (padding tolerated, no dot, at most 1 KiB) holding a JSON object with an
// "alg" member, printable and without line breaks. Anything else, a whole
// token included, is refused: a header is the only part of a token that may
// be quoted.
func ParseJWTHeader(encoded string) (JWTHeader, error) {
	encoded = strings.TrimSpace(encoded)
	switch {
	case encoded == "":
		return JWTHeader{}, errors.New("JWT header is empty")
	case len(encoded) > maxJWTHeaderLen:
		return JWTHeader{}, errors.New("JWT header is too long")
	case strings.Contains(encoded, "."):
		return JWTHeader{}, errors.New("not a JWT header alone: it holds a dot")
	}
	raw, err := claimsDecodeSegment(encoded)
	if err != nil {
		return JWTHeader{}, errors.New("JWT header is not base64url")
	}
	for _, r := range string(raw) {
		if !unicode.IsPrint(r) {
			return JWTHeader{}, errors.New("JWT header holds a character that is not printable")
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return JWTHeader{}, errors.New("JWT header is not a JSON object")
	}
	h := JWTHeader{JSON: string(raw), Alg: claimsString(m["alg"]), KeyID: claimsString(m["kid"]), X5T: claimsString(m["x5t"])}
	if h.Alg == "" {
		return JWTHeader{}, errors.New(`JWT header has no "alg"`)
	}
	return h, nil
}
