package kvwire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxClaimsTokenLen bounds the token [ParseClaims] reads. Entra access tokens
// are a few KiB; a larger input is not one.
const maxClaimsTokenLen = 16 << 10

// claimsMaxUnix is the latest date claim accepted (9999-12-31T23:59:59Z);
// claimsMinUnix the earliest (0001-01-01T00:00:00Z). Beyond them a date
// claim is nonsense, and time arithmetic would overflow.
const (
	claimsMaxUnix = 253402300799
	claimsMinUnix = -62135596800
)

// Claims are the diagnostic claims of an access token. Reading them does not
// verify the token: use them to explain a failure, never to decide access.
type Claims struct {
	TenantID     string // tid
	ObjectID     string // oid: the principal's object id
	AppID        string // appid, or azp when appid is absent (v2.0 tokens)
	Audience     string // aud; the first entry when aud is an array
	Issuer       string // iss
	MIResourceID string // xms_mirid: the managed identity's Azure resource id

	ExpiresAt time.Time // exp (UTC); zero when absent
	NotBefore time.Time // nbf (UTC); zero when absent
	IssuedAt  time.Time // iat (UTC); zero when absent
}

// ParseClaims decodes a JWT's payload (base64url, padding tolerated) without
// verifying it. A leading "Bearer " is ignored. Tokens over 16 KiB, encrypted
// tokens (JWE) and payloads that are not a JSON object are refused.
//
// String claims of another JSON type are ignored; date claims may be JSON
// numbers (integer or fractional seconds since the epoch) or strings holding
// one. Errors never contain the token or a part of it.
func ParseClaims(token string) (Claims, error) {
	if len(token) > maxClaimsTokenLen {
		return Claims{}, fmt.Errorf("access token is %d bytes, more than the %d a token's claims are read from", len(token), maxClaimsTokenLen)
	}
	token = strings.TrimSpace(token)
	if len(token) >= 6 && strings.EqualFold(token[:6], "bearer") && (len(token) == 6 || token[6] == ' ' || token[6] == '\t') {
		token = strings.TrimSpace(token[6:])
	}
	if token == "" {
		return Claims{}, errors.New("access token is empty")
	}
	parts := strings.Count(token, ".") + 1
	switch {
	case parts == 5:
		return Claims{}, errors.New("access token is encrypted (JWE); its claims cannot be read")
	case parts != 3:
		return Claims{}, fmt.Errorf("access token is not a JWT: it has %d dot-separated parts, not 3", parts)
	}
	_, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	raw, err := claimsDecodeSegment(payload)
	if err != nil {
		return Claims{}, errors.New("access token payload is not base64url")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		// The json error would quote a character of the payload: say less.
		return Claims{}, errors.New("access token payload is not a JSON object")
	}
	c := Claims{
		TenantID:     claimsString(m["tid"]),
		ObjectID:     claimsString(m["oid"]),
		AppID:        claimsString(m["appid"]),
		Audience:     claimsAudience(m["aud"]),
		Issuer:       claimsString(m["iss"]),
		MIResourceID: claimsString(m["xms_mirid"]),
	}
	if c.AppID == "" {
		c.AppID = claimsString(m["azp"])
	}
	for _, d := range []struct {
		name string
		dst  *time.Time
	}{{"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}, {"iat", &c.IssuedAt}} {
		t, err := claimsDate(m[d.name])
		if err != nil {
			return Claims{}, fmt.Errorf("access token claim %s: %w", d.name, err)
		}
		*d.dst = t
	}
	return c, nil
}

// claimsDecodeSegment decodes one JWT segment: base64url without padding as
// RFC 7515 says, tolerating padding and the standard alphabet.
func claimsDecodeSegment(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	enc := base64.RawURLEncoding
	if strings.ContainsAny(s, "+/") {
		enc = base64.RawStdEncoding
	}
	return enc.DecodeString(s)
}

// claimsString returns a JSON string's value, "" for anything else.
func claimsString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// claimsAudience reads aud: a string, or an array whose first string entry
// is taken.
func claimsAudience(raw json.RawMessage) string {
	if len(raw) > 0 && raw[0] == '[' {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return ""
		}
		for _, e := range list {
			if s := claimsString(e); s != "" {
				return s
			}
		}
		return ""
	}
	return claimsString(raw)
}

// claimsDate reads a NumericDate (RFC 7519): seconds since the epoch, whole
// or fractional, as a JSON number or a string holding one. Absent or null
// gives the zero time.
func claimsDate(raw json.RawMessage) (time.Time, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	var num string
	switch raw[0] {
	case '"':
		if json.Unmarshal(raw, &num) != nil {
			return time.Time{}, errors.New("not a date")
		}
		num = strings.TrimSpace(num)
	default:
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return time.Time{}, errors.New("not a number")
		}
		num = n.String()
	}
	if sec, err := strconv.ParseInt(num, 10, 64); err == nil {
		if sec < claimsMinUnix || sec > claimsMaxUnix {
			return time.Time{}, errors.New("date out of range")
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, errors.New("not a number")
	}
	if f < claimsMinUnix || f > claimsMaxUnix {
		return time.Time{}, errors.New("date out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
}
