package diagnose

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
)

var (
	urlRe = regexp.MustCompile(`https?://[^\s,'"]+`)
	// audienceRe reads AKV10022's "Expected <aud>[ or <app id>], found: <aud>".
	audienceRe = regexp.MustCompile(`(?i)expected:?\s+([^\r\n]{1,600}?),?\s+found:?\s+(\S{1,300})`)
	// hsmAudienceRe reads Managed HSM's "Found token with aud=<aud>, but
	// expected aud=<aud>" (no AKV code).
	hsmAudienceRe = regexp.MustCompile(`(?i)found token with aud=(\S{1,300}?),?\s+but expected aud=(\S{1,300})`)
	// jwtHeaderRe finds the header AKV10046 quotes.
	jwtHeaderRe = regexp.MustCompile(`EncodedJwtHeader:\s*'?([A-Za-z0-9_\-=]{8,1000})`)
)

// keyVaultAppID is Key Vault's first-party application id; AKV10022 names
// it beside https://vault.azure.net as an accepted audience.
const keyVaultAppID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"

// microsoftTenants are Microsoft's own tenants, which Key Vault lists
// among the issuers it accepts after the vault's tenant (AKV10032).
var microsoftTenants = map[string]bool{
	"72f988bf-86f1-41af-91ab-2d7cd011db47": true,
	"f8cdef31-a31e-4b4a-93e4-5f571e91255a": true,
	"e2d54eb5-3869-4f70-8578-dee5fc7331f4": true,
	"33e01921-4d64-4f8c-a055-5bdaffd5e33d": true,
	"975f013f-7f24-47e8-a7d3-abc4752bf346": true,
}

func unauthorized(d *Diagnosis, in Input, ve kvwire.VaultError) {
	msg := ve.Text()
	lmsg := strings.ToLower(msg)
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	if !in.Token.ExpiresAt.IsZero() {
		d.TokenExpiresAt = in.Token.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if !in.Token.NotBefore.IsZero() {
		d.TokenNotBefore = in.Token.NotBefore.UTC().Format(time.RFC3339)
	}
	challenge := in.Challenge
	// The vault's tenant: learned from its verified challenge, else named
	// by this answer's own challenge; a placeholder names none.
	vaultTenant := kvwire.TenantID(cmp.Or(kvwire.TenantID(in.VaultTenantID), challenge.TenantID))
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(lmsg, s) {
				return true
			}
		}
		return false
	}
	// Messages are read by meaning: the same cause has carried an AKV
	// code, an IdentityModel code (IDX…), an S2S code with a bracketed
	// reason, or plain words, depending on the service's version.
	isExpired := has("expired", "idx10223", "lifetime validation failed")
	notYet := has("not yet valid", "notyetvalid", "not valid yet", "idx10222")
	noToken := has("akv10000", "missing a bearer", "bearer or pop token is missing") ||
		// An answer of nothing but the challenge is how vaults (2018) and
		// Managed HSMs answer a request that carries no token.
		strings.TrimSpace(msg) == "" && !ve.JSON && challenge.Error == "" && (challenge.Resource != "" || challenge.Scope != "")
	specific := noToken || has("akv10046", "s2s12005", "bearerreadaccesstokenfailed") ||
		strings.EqualFold(challenge.Error, "insufficient_claims")
	switch {
	case has("akv10032", "invalid issuer"):
		tenantMismatch(d, in, msg, vaultTenant, challenge)
	case has("akv10022", "invalid audience") || hsmAudienceRe.MatchString(msg):
		audienceMismatch(d, in, msg, challenge)
	case notYet:
		notYetValid(d, in, now)
	case isExpired:
		expired(d, in, now, true)
	case specific:
		rejected(d, msg, challenge, noToken)
	case !in.Token.ExpiresAt.IsZero() && in.Token.ExpiresAt.Before(now):
		expired(d, in, now, false)
	case !in.Token.NotBefore.IsZero() && in.Token.NotBefore.After(now):
		notYetValid(d, in, now)
	case wrongAudience(in, challenge):
		audienceMismatch(d, in, msg, challenge)
	case vaultTenant != "" && d.Identity.TenantID != "" && !strings.EqualFold(vaultTenant, d.Identity.TenantID):
		tenantMismatch(d, in, msg, vaultTenant, challenge)
	default:
		rejected(d, msg, challenge, false)
	}
}

// expectedResource is the audience the vault wants: its challenge's
// resource, else the one its host's cloud and kind (vault or Managed HSM)
// take; "" when neither says.
func expectedResource(in Input, challenge kvwire.Challenge) string {
	if s, err := challenge.TokenScope(); err == nil {
		return kvwire.ResourceFromScope(s)
	}
	if s, ok := kvwire.LookupHost(in.Vault); ok {
		return s.Resource()
	}
	return ""
}

// wrongAudience reports whether the token's aud claim is for another
// resource than the vault's challenge (or host) asks for. Key Vault also
// accepts its application id as the audience.
func wrongAudience(in Input, challenge kvwire.Challenge) bool {
	aud := strings.TrimSuffix(strings.TrimSpace(in.Token.Audience), "/")
	want := strings.TrimSuffix(expectedResource(in, challenge), "/")
	if aud == "" || want == "" || strings.EqualFold(aud, want) {
		return false
	}
	return !(strings.EqualFold(aud, keyVaultAppID) && !strings.Contains(strings.ToLower(want), "managedhsm"))
}

func tenantMismatch(d *Diagnosis, in Input, msg, vaultTenant string, challenge kvwire.Challenge) {
	d.Code = TenantMismatch
	var expected []string
	found := ""
	if i := lastIndexFold(msg, "found"); i >= 0 {
		for _, u := range urlRe.FindAllString(msg[:i], 20) {
			if t := kvwire.TenantID(kvwire.TenantFromAuthority(u)); t != "" {
				expected = append(expected, t)
			}
		}
		if u := urlRe.FindString(msg[i:]); u != "" {
			found = kvwire.TenantID(kvwire.TenantFromAuthority(strings.TrimRight(u, ".")))
		}
	}
	// Key Vault lists the vault's tenant first and Microsoft's own after
	// it. When every tenant it lists is Microsoft's, the vault is
	// Microsoft's: the URL names a vault that is not the caller's.
	microsoftOnly := len(expected) > 0
	for _, t := range expected {
		microsoftOnly = microsoftOnly && microsoftTenants[t]
	}
	want := ""
	for _, t := range expected {
		if vaultTenant != "" && t == vaultTenant {
			want = t
		}
	}
	for _, t := range expected {
		if want == "" && !microsoftTenants[t] {
			want = t
		}
	}
	if want == "" && len(expected) > 0 {
		want = expected[0]
	}
	if want == "" {
		want = cmp.Or(vaultTenant, kvwire.TenantID(challenge.TenantID))
	}
	d.ExpectedTenant = want
	// What the vault says it found is what it judged; the token's own tid
	// agrees with it except when the vault saw another token than we think.
	d.ActualTenant = cmp.Or(found, d.Identity.TenantID)
	if microsoftOnly {
		host := "the vault URL names a vault that is not yours"
		if h := safe(kvwire.HostOnly(in.Vault), urlChars, 300); h != "" {
			host = h + " is most likely not your vault"
		}
		tenants := strings.Join(expected, ", ")
		from := ""
		if d.ActualTenant != "" {
			from = " and the token was issued in tenant " + d.ActualTenant
		}
		d.Detail = fmt.Sprintf("The vault accepts only tokens of Microsoft's own tenants (%s)%s: %s "+
			"(a typo in its name, or an unset template variable such as \"undefined\"). Check KVPROXY_VAULT_URL; only if this is the vault you mean, use an identity from tenant %s (AZURE_TENANT_ID=%s for a multi-tenant app registration).",
			tenants, from, host, want, want)
		return
	}
	fix := "Use an identity from the vault's tenant: set AZURE_TENANT_ID to it for a multi-tenant app registration, or federate the workload identity with an app registered there (a managed identity cannot cross tenants). If the vault should be in your tenant, check KVPROXY_VAULT_URL."
	if want != "" {
		fix = fmt.Sprintf("Use an identity from tenant %s: set AZURE_TENANT_ID=%s for a multi-tenant app registration, or federate the workload identity with an app registered there (a managed identity cannot cross tenants).", want, want)
	}
	switch {
	case want != "" && d.ActualTenant != "":
		d.Detail = fmt.Sprintf("The token was issued in tenant %s, but the vault belongs to tenant %s. %s", d.ActualTenant, want, fix)
	case want != "":
		d.Detail = fmt.Sprintf("The token was not issued in tenant %s, the vault's tenant. %s", want, fix)
	case d.ActualTenant != "":
		d.Detail = fmt.Sprintf("The vault does not accept tokens issued in tenant %s. %s", d.ActualTenant, fix)
	default:
		d.Detail = "The vault does not accept tokens from the token's issuer (tenant). " + fix
	}
}

func audienceMismatch(d *Diagnosis, in Input, msg string, challenge kvwire.Challenge) {
	d.Code = AudienceMismatch
	if m := hsmAudienceRe.FindStringSubmatch(msg); m != nil {
		d.ActualAudience = safe(strings.TrimRight(m[1], ",."), urlChars, 300)
		d.ExpectedAudience = safe(strings.TrimRight(m[2], ",.)"), urlChars, 300)
	} else if m := audienceRe.FindStringSubmatch(msg); m != nil {
		// "Expected https://vault.azure.net or cfa8b339-…": the first
		// that is a URL is the one to ask for.
		for _, e := range strings.Split(m[1], " or ") {
			if e = strings.TrimRight(strings.TrimSpace(e), ",."); strings.Contains(e, "://") {
				d.ExpectedAudience = safe(e, urlChars, 300)
				break
			}
		}
		d.ActualAudience = safe(strings.TrimSuffix(m[2], "."), urlChars, 300)
	}
	if d.ExpectedAudience == "" {
		d.ExpectedAudience = safe(expectedResource(in, challenge), urlChars, 300)
	}
	if host := kvwire.HostOnly(in.Vault); d.ExpectedAudience == "" && !kvwire.IsIP(host) {
		// The vault's parent domain: myvault.vault.azure.net → https://vault.azure.net.
		if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") {
			d.ExpectedAudience = safe("https://"+strings.ToLower(parent), urlChars, 300)
		}
	}
	if d.ActualAudience == "" {
		d.ActualAudience = safe(in.Token.Audience, urlChars, 300)
	}
	if d.ActualAudience == "" {
		d.ActualAudience = safe(strings.TrimSuffix(in.Scope, "/.default"), urlChars, 300)
	}
	want := strings.TrimSuffix(d.ExpectedAudience, "/")
	if want != "" && !strings.Contains(want, "://") && kvwire.GUID(want) == "" {
		want = "https://" + want
	}
	what := "the vault"
	if kvwire.IsManagedHSM(in.Vault) || strings.Contains(strings.ToLower(want), "managedhsm") {
		what = "the Managed HSM"
	}
	scope := safe(in.Scope, urlChars, 300)
	var setting string
	switch {
	case want == "":
		setting = "Set KVPROXY_TOKEN_SCOPE to the vault's resource followed by /.default (e.g. https://vault.azure.net/.default, https://managedhsm.azure.net/.default for a Managed HSM), or unset it to derive it from the vault host."
	case scope != "" && strings.EqualFold(strings.TrimSuffix(scope, "/.default"), want):
		setting = fmt.Sprintf("kvproxy asked for %s, so the credential answered with a token for another resource: check the identity endpoint (IDENTITY_ENDPOINT) or the authority in front of it.", scope)
	case scope != "":
		setting = fmt.Sprintf("KVPROXY_TOKEN_SCOPE=%s should be %s/.default (or unset it to derive it from the vault host).", scope, want)
	default:
		setting = fmt.Sprintf("Request tokens for %s/.default (KVPROXY_TOKEN_SCOPE=%s/.default).", want, want)
	}
	if a := strings.ToLower(d.ActualAudience); strings.TrimPrefix(a, "spn:") == keyVaultAppID {
		setting = "The token names Key Vault by its application id (" + d.ActualAudience + "), a form the vault refuses. " + setting
	}
	switch {
	case d.ActualAudience != "" && d.ExpectedAudience != "":
		d.Detail = fmt.Sprintf("The token is for %s, but %s expects %s. %s", d.ActualAudience, what, d.ExpectedAudience, setting)
	case d.ExpectedAudience != "":
		d.Detail = fmt.Sprintf("The token is not for %s, the audience %s expects. %s", d.ExpectedAudience, what, setting)
	default:
		d.Detail = "The token is for another resource than " + what + ". " + setting
	}
}

func expired(d *Diagnosis, in Input, now time.Time, vaultSaid bool) {
	d.Code = TokenExpired
	clock := now.UTC().Format(time.RFC3339)
	exp := in.Token.ExpiresAt
	switch {
	case exp.IsZero():
		d.Detail = fmt.Sprintf("The vault rejected the token as expired (this host's clock reads %s). "+
			"kvproxy fetches a new token on the next request; if this persists, the credential hands out stale tokens or this host's clock is wrong (check NTP).", clock)
	case !exp.After(now):
		how := "The vault rejected the token as expired"
		if !vaultSaid {
			how = "The vault rejected a token that had expired"
		}
		d.Detail = fmt.Sprintf("%s: it expired at %s, %s before this host's clock (%s). "+
			"kvproxy should have refreshed it; a stale token was sent (a new one is fetched on the next request) or this host's clock jumped (check NTP).",
			how, d.TokenExpiresAt, roundDuration(now.Sub(exp)), clock)
	default:
		d.Detail = fmt.Sprintf("The vault says the token expired, but it is valid until %s by this host's clock (%s). "+
			"This host's clock or the vault's is wrong (clock skew): check NTP on this host.", d.TokenExpiresAt, clock)
	}
}

func notYetValid(d *Diagnosis, in Input, now time.Time) {
	d.Code = TokenExpired
	clock := now.UTC().Format(time.RFC3339)
	nbf := in.Token.NotBefore
	switch {
	case nbf.IsZero():
		d.Detail = fmt.Sprintf("The vault says the token is not valid yet (this host's clock reads %s): the vault's clock and the token issuer's disagree (clock skew). "+
			"It usually passes within minutes; if it persists, check this host's clock (NTP) and quote the x-ms-request-id to Azure support.", clock)
	case nbf.After(now):
		d.Detail = fmt.Sprintf("The token is not valid before %s, %s after this host's clock (%s), so the vault refused it: clock skew between this host and Microsoft Entra ID. "+
			"Check NTP on this host.", d.TokenNotBefore, roundDuration(nbf.Sub(now)), clock)
	default:
		d.Detail = fmt.Sprintf("The vault says the token is not valid yet, but it has been valid since %s by this host's clock (%s): the vault's clock is behind (clock skew). "+
			"It usually passes within minutes; if it persists, quote the x-ms-request-id to Azure support.", d.TokenNotBefore, clock)
	}
}

func rejected(d *Diagnosis, msg string, challenge kvwire.Challenge, noToken bool) {
	d.Code = TokenRejected
	lmsg := strings.ToLower(msg)
	q := quote(withJWTHeader(msg), 400)
	var hint string
	switch {
	case strings.EqualFold(challenge.Error, "insufficient_claims"):
		hint = "The vault demands a token with more claims (continuous access evaluation): the token was revoked or the principal's access changed; kvproxy fetches a new token with the challenge's claims."
	case noToken:
		hint = "No token reached the vault: kvproxy attaches one, so something between kvproxy and the vault (an HTTP proxy, a gateway) dropped the Authorization header."
	case strings.Contains(lmsg, "akv10046"):
		hint = "The vault could not resolve the signing key, the key that signed the token (its JWT header names it). This is usually transient: the same token succeeds moments later, and kvproxy retries a GET or HEAD once after a short pause. " +
			"If it persists, the token was not issued by Microsoft Entra ID for this cloud; quote the x-ms-request-id and the JWT header (not the token) to Azure support."
	case strings.Contains(lmsg, "s2s12005") || strings.Contains(lmsg, "bearerreadaccesstokenfailed"):
		hint = "The vault could not read the Authorization header's bearer token as an access token: the credential handed out something that is not a Microsoft Entra access token (a JWT)."
	default:
		hint = "Check that the credential issues Microsoft Entra tokens for this vault's cloud and tenant."
	}
	if q == "" {
		if noToken {
			d.Detail = "The vault answered with its challenge and no error body, as it answers a request without a token. " + hint
			return
		}
		d.Detail = "The vault rejected the token without a Key Vault error body. " + hint
		return
	}
	if noToken {
		d.Detail = fmt.Sprintf("The vault says no token reached it: %s %s", sentence(q), hint)
		return
	}
	d.Detail = fmt.Sprintf("The vault rejected the token: %s %s", sentence(q), hint)
}

// withJWTHeader replaces the encoded JWT header a message quotes
// (AKV10046's EncodedJwtHeader) by its decoded JSON, which support asks
// for and which [quote]'s redaction would otherwise hide as token-shaped.
// A header holds no claim and no signature; anything that does not decode
// to one is left for the redaction.
func withJWTHeader(msg string) string {
	loc := jwtHeaderRe.FindStringSubmatchIndex(msg)
	if loc == nil {
		return msg
	}
	h, err := kvwire.ParseJWTHeader(msg[loc[2]:loc[3]])
	if err != nil || kvwire.Redact(h.JSON) != h.JSON {
		return msg
	}
	return msg[:loc[2]] + h.JSON + msg[loc[3]:]
}

// lastIndexFold is strings.LastIndex ignoring ASCII case; unlike an
// index into strings.ToLower(s), it is always an index into s.
func lastIndexFold(s, sub string) int {
	for i := len(s) - len(sub); i >= 0; i-- {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
