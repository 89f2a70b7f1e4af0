package clientauth

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxTokenBytes bounds the token a client may send; a ServiceAccount token
// is about 1 KiB. Longer tokens are refused as malformed before any parsing.
const MaxTokenBytes = 16 << 10

// SubjectPrefix starts the subject of every ServiceAccount token.
const SubjectPrefix = "system:serviceaccount:"

// algorithms are the signature algorithms accepted: asymmetric only.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Algorithms returns the accepted signature algorithms.
func Algorithms() []string {
	out := make([]string, len(algorithms))
	for i, a := range algorithms {
		out[i] = string(a)
	}
	return out
}

func acceptedAlg(alg string) bool {
	for _, a := range algorithms {
		if string(a) == alg {
			return true
		}
	}
	return false
}

// BearerToken returns the token of an Authorization header value
// `Bearer <token>` (the scheme is case-insensitive), or "" when the header
// holds no bearer token; [Verifier.Verify] refuses "" as [ReasonMissing].
func BearerToken(authorization string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// header is what is read from a token's protected header before choosing
// a key: its algorithm and key id.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// parseHeader reads the protected header of a compact JWS without
// verifying anything, so that a refusal can say which algorithm or key was
// asked for. A token that is not three base64url parts is malformed.
func parseHeader(raw string) (header, *Error) {
	var h header
	if len(raw) > MaxTokenBytes {
		return h, refuse(ReasonMalformed, "token longer than 16 KiB")
	}
	first, rest, ok := strings.Cut(raw, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return h, refuse(ReasonMalformed, "not a JWS in compact form (three dot-separated parts)")
	}
	b, err := base64.RawURLEncoding.DecodeString(first)
	if err != nil {
		return h, refuse(ReasonMalformed, "header is not base64url")
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, refuse(ReasonMalformed, "header is not a JSON object")
	}
	if !acceptedAlg(h.Alg) {
		return h, refuse(ReasonUnsupportedAlgorithm, "alg "+quoteShort(h.Alg)+" (accepted: asymmetric signatures, e.g. RS256, ES256)")
	}
	return h, nil
}

// Identity is who a verified token names.
type Identity struct {
	// Subject is system:serviceaccount:<Namespace>:<Name>.
	Subject   string
	Namespace string
	Name      string
}

// ParseSubject splits a ServiceAccount subject
// `system:serviceaccount:<namespace>:<name>`. The namespace must be a DNS
// label and the name a DNS subdomain, as Kubernetes requires, so a subject
// that reaches a policy or a log holds no wildcard, space or control byte.
func ParseSubject(sub string) (Identity, bool) {
	rest, ok := strings.CutPrefix(sub, SubjectPrefix)
	if !ok {
		return Identity{}, false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || !dnsLabel(ns) || !dnsSubdomain(name) {
		return Identity{}, false
	}
	return Identity{Subject: sub, Namespace: ns, Name: name}, true
}

// ValidNamespace reports whether s is a Kubernetes namespace name (a DNS
// label), as the subject of a ServiceAccount token names it.
func ValidNamespace(s string) bool { return dnsLabel(s) }

// ValidServiceAccount reports whether s is a ServiceAccount name (a DNS
// subdomain).
func ValidServiceAccount(s string) bool { return dnsSubdomain(s) }

func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func dnsSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabel(l) {
			return false
		}
	}
	return true
}

// quoteShort quotes a value taken from a token for a refusal's detail,
// cut to 40 bytes, so a detail stays one bounded line.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(jsonQuote(s), "")
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
