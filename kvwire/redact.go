package kvwire

import (
	"regexp"
	"strings"
)

// Redacted replaces what [Redact] removes.
const Redacted = "[REDACTED]"

// tokenShape matches anything that could be a bearer credential: a JWT or
// JWS (eyJ… with one or two dots; the signature may be cut off), a long run
// of base64url characters, or a long run of standard base64 with its
// padding. Resource ids survive: their GUIDs' and names' hyphens break the
// standard-base64 run, and their slashes the base64url one.
var tokenShape = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*|[A-Za-z0-9_\-+=]{80,}|[A-Za-z0-9+/]{80,}={0,2}`)

// Redact replaces every token-shaped substring of s with [Redacted]. It is
// the one redaction kvproxy applies to text that may quote a credential: a
// vault or identity endpoint's message, and every string a log line holds.
// A token of another shape is only caught by [RedactToken].
func Redact(s string) string {
	if len(s) < 9 || len(s) < 80 && !strings.Contains(s, "eyJ") {
		return s // too short for either shape: the common case, no regexp
	}
	return tokenShape.ReplaceAllString(s, Redacted)
}

// RedactToken replaces every occurrence of token in s, whatever its shape,
// then applies [Redact]. Tokens shorter than 8 bytes are not searched for
// (they would erase ordinary words).
func RedactToken(s, token string) string {
	if len(token) >= 8 && strings.Contains(s, token) {
		s = strings.ReplaceAll(s, token, Redacted)
	}
	return Redact(s)
}
