package kvwire

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// maxChallengeLen bounds the WWW-Authenticate value [ParseChallenge] reads.
const maxChallengeLen = 16 << 10

// Challenge is a parsed Bearer challenge from Key Vault.
//
// Key Vault answers a request without a token with
//
//	Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"
//
// and a continuous access evaluation (CAE) refusal with
//
//	Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="<base64 JSON>"
type Challenge struct {
	// Authority is authorization= (or authorization_uri= when that is
	// absent), e.g. https://login.microsoftonline.com/<tenant>.
	Authority string
	// TenantID is the tenant named by Authority, as [TenantFromAuthority]
	// reads it. Set only when Authority is.
	TenantID string
	// Resource is resource=.
	Resource string
	// Scope is scope=; it wins over Resource (see [Challenge.TokenScope]).
	Scope string
	// Error is error=, e.g. insufficient_claims for a CAE challenge.
	Error string
	// Claims is claims= decoded from base64 (standard or URL alphabet,
	// padded or not): the JSON that azcore's TokenRequestOptions.Claims
	// takes. "" when absent.
	Claims string
}

// ParseChallenge parses the first Bearer challenge in a WWW-Authenticate
// header value. The value may hold several comma-separated challenges of any
// scheme (RFC 9110 section 11.6.1); auth-params are key=value or
// key="quoted value" with backslash escapes; scheme and keys are
// case-insensitive and, when a key repeats, its first value counts.
//
// It fails when the value holds no Bearer challenge, is over 16 KiB, or
// carries a claims parameter that is not base64-encoded JSON (retrying with
// it could not succeed); in that last case the challenge's other parameters
// are returned with the error, so a diagnosis can still read them. It never
// panics, whatever the input.
func ParseChallenge(header string) (Challenge, error) {
	if len(header) > maxChallengeLen {
		return Challenge{}, fmt.Errorf("WWW-Authenticate value is %d bytes, more than the %d read", len(header), maxChallengeLen)
	}
	params, ok := challengeBearerParams(header)
	if !ok {
		return Challenge{}, errors.New("WWW-Authenticate holds no Bearer challenge")
	}
	c := Challenge{
		Authority: params["authorization"],
		Resource:  params["resource"],
		Scope:     params["scope"],
		Error:     params["error"],
	}
	if c.Authority == "" {
		c.Authority = params["authorization_uri"]
	}
	c.TenantID = TenantFromAuthority(c.Authority)
	if raw := strings.TrimSpace(params["claims"]); raw != "" {
		claims, err := challengeDecodeClaims(raw)
		if err != nil {
			return c, err
		}
		c.Claims = claims
	}
	return c, nil
}

// TokenScope returns the scope to request a token for: Scope when the
// challenge has one (a bare resource without /.default gets "/.default"
// appended), else Resource + "/.default". One trailing slash of a bare
// resource is dropped first, so https://vault.azure.net/ gives
// https://vault.azure.net/.default, never a double slash.
func (c Challenge) TokenScope() (string, error) {
	s := c.Scope
	if s == "" {
		s = c.Resource
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("the challenge names neither a scope nor a resource")
	}
	if strings.HasSuffix(s, "/.default") {
		if s == "/.default" {
			return "", fmt.Errorf("challenge scope %q names no resource", s)
		}
		return s, nil
	}
	resource := strings.TrimSuffix(s, "/")
	if resource == "" {
		return "", fmt.Errorf("challenge resource %q names no resource", s)
	}
	return resource + "/.default", nil
}

// VerifyChallengeScope checks that a challenge's scope (or bare resource) may
// be trusted for a vault: it must be an https URL whose host is a parent
// domain of vaultHost. This is the rule of the Azure SDK for Go's Key Vault
// challenge policy (sdk/security/keyvault/internal, challenge_policy.go):
// vaultHost must end with "." + the resource's host, so
// myvault.vault.azure.net accepts https://vault.azure.net and
// https://azure.net, but not https://vault.azure.cn, https://myvault.azure.net
// or a resource host equal to the vault host. Hosts compare
// case-insensitively and ports count as part of the host, as in the SDK.
// Without this check a hostile host could issue a challenge for another
// resource and harvest a token for it.
func VerifyChallengeScope(vaultHost, scope string) error {
	vault := strings.ToLower(strings.TrimSpace(vaultHost))
	if vault == "" {
		return errors.New("no vault host to verify the challenge scope against")
	}
	u, err := url.Parse(strings.TrimSpace(scope))
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("challenge scope %q is not an absolute URL; want an https resource whose host is a parent domain of %s", scope, vault)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("challenge scope %q is not https; want an https resource whose host is a parent domain of %s", scope, vault)
	}
	if u.User != nil {
		return fmt.Errorf("challenge scope %q carries user information; want an https resource whose host is a parent domain of %s", scope, vault)
	}
	host := strings.ToLower(u.Host)
	if !strings.HasSuffix(vault, "."+host) {
		want := "a parent domain of " + vault
		if _, parent, ok := strings.Cut(vault, "."); ok && parent != "" {
			want += " (such as " + parent + ")"
		}
		return fmt.Errorf("challenge scope %q is for host %s, but vault %s only accepts a challenge for %s", scope, host, vault, want)
	}
	return nil
}

// TenantFromAuthority reads the tenant from an authority or issuer URL:
// https://login.microsoftonline.com/<tenant>[/v2.0],
// https://sts.windows.net/<tenant>/, or a host without a scheme. It takes
// the first path segment, skipping a leading "dstsv2", "tfp" or "te"
// segment (dSTS and Azure AD B2C authorities put the tenant second), as the
// Azure SDK for Go's Key Vault challenge policy does for dstsv2, without its
// old panic on a URL with no path. It returns "" when the URL has no path,
// names ADFS ("/adfs"), or the segment holds characters no tenant has.
// Names like "common" are returned as they are: see [IsTenantID].
func TenantFromAuthority(authority string) string {
	authority = strings.TrimSpace(authority)
	if authority == "" || len(authority) > maxChallengeLen {
		return ""
	}
	u, err := url.Parse(authority)
	if err != nil {
		return ""
	}
	if u.Host == "" {
		if u, err = url.Parse("https://" + authority); err != nil {
			return ""
		}
	}
	var segs []string
	for _, s := range strings.Split(u.EscapedPath(), "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 {
		return ""
	}
	tenant := segs[0]
	switch strings.ToLower(tenant) {
	case "dstsv2", "tfp", "te":
		if len(segs) < 2 {
			return ""
		}
		tenant = segs[1]
	case "adfs":
		return ""
	}
	if !challengeTenantLike(tenant) {
		return ""
	}
	return tenant
}

// IsTenantID reports whether s is a tenant ID: a GUID. Authority names such
// as "common" or "organizations" and placeholders such as "XXX" are not.
func IsTenantID(s string) bool { return GUID(s) != "" }

// TenantID returns s lower-cased when it names a tenant: a GUID other than
// the all-zero one (test recorders' sanitised stand-in). Authority names
// ("common", "organizations", "consumers"), domain names and placeholders
// ("XXX", "ee4XXXXXXXXd6", "***", "REDACTED", "{tenant 1}") give "": none
// of them may be reported as a principal's or a vault's tenant.
func TenantID(s string) string {
	g := GUID(s)
	if g == "00000000-0000-0000-0000-000000000000" {
		return ""
	}
	return g
}

// GUID returns s lower-cased when it is a GUID
// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits), else "".
func GUID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 36 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return ""
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return ""
			}
		}
	}
	return s
}

// challengeTenantLike reports whether s could be a tenant: a GUID, a domain
// name, or a name like "common". Anything else is not passed on to a token
// request URL.
func challengeTenantLike(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
		default:
			return false
		}
	}
	return true
}

// challengeDecodeClaims decodes a CAE claims parameter to its JSON text.
func challengeDecodeClaims(raw string) (string, error) {
	s := strings.TrimRight(raw, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil || !json.Valid(b) {
		// Like azcore, say no more than that: the decoder's error is unhelpful.
		return "", errors.New("the challenge's claims parameter is not base64-encoded JSON")
	}
	return string(b), nil
}

// challengeBearerParams scans a WWW-Authenticate value and returns the
// auth-params of its first Bearer challenge, keys lower-cased. A word not
// followed by '=' starts a new challenge (it is the scheme), except right
// after a scheme, where it is a token68 credential ("Negotiate YII…").
func challengeBearerParams(h string) (map[string]string, bool) {
	sc := challengeScanner{s: h}
	var params map[string]string // non-nil once inside a Bearer challenge
	afterScheme := false
	for {
		if sc.skipSeparators() {
			afterScheme = false
		}
		if sc.eof() {
			return params, params != nil
		}
		word := sc.word()
		if word == "" {
			// A stray quote or equals sign: skip it and what follows up to
			// the next separator.
			sc.skipJunk()
			afterScheme = false
			continue
		}
		save := sc.i
		sc.skipSpace()
		if sc.peek() != '=' {
			sc.i = save
			if afterScheme {
				afterScheme = false // token68: not ours to read
				continue
			}
			if params != nil {
				return params, true // the next challenge begins
			}
			if strings.EqualFold(word, "bearer") {
				params = map[string]string{}
			}
			afterScheme = true
			continue
		}
		afterScheme = false
		if strings.HasPrefix(sc.s[sc.i:], "==") {
			// token68 padding ("YII…=="), not a parameter.
			for sc.peek() == '=' {
				sc.i++
			}
			continue
		}
		sc.i++ // '='
		sc.skipSpace()
		var value string
		if sc.peek() == '"' {
			value = sc.quoted()
		} else {
			value = sc.word()
		}
		if params != nil {
			key := strings.ToLower(word)
			if _, seen := params[key]; !seen {
				params[key] = value
			}
		}
	}
}

// challengeScanner walks a WWW-Authenticate value byte by byte; every method
// stops at the end of the input.
type challengeScanner struct {
	s string
	i int
}

func (sc *challengeScanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *challengeScanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

func (sc *challengeScanner) skipSpace() {
	for !sc.eof() && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipSeparators skips spaces, tabs and commas, and reports whether it
// skipped a comma.
func (sc *challengeScanner) skipSeparators() bool {
	comma := false
	for !sc.eof() && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t' || sc.s[sc.i] == ',') {
		comma = comma || sc.s[sc.i] == ','
		sc.i++
	}
	return comma
}

// word reads a token: bytes up to a space, tab, comma, equals sign or quote.
func (sc *challengeScanner) word() string {
	start := sc.i
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', ',', '=', '"':
			return sc.s[start:sc.i]
		}
		sc.i++
	}
	return sc.s[start:]
}

// quoted reads a quoted-string, resolving backslash escapes; an unterminated
// one runs to the end of the input.
func (sc *challengeScanner) quoted() string {
	sc.i++ // opening quote
	var b strings.Builder
	for !sc.eof() {
		c := sc.s[sc.i]
		sc.i++
		switch c {
		case '\\':
			if !sc.eof() {
				b.WriteByte(sc.s[sc.i])
				sc.i++
			}
		case '"':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// skipJunk skips a stray character and anything up to the next separator.
func (sc *challengeScanner) skipJunk() {
	if sc.peek() == '"' {
		sc.quoted()
		return
	}
	sc.i++
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', ',':
			return
		}
		sc.i++
	}
}
