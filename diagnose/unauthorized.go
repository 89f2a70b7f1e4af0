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
	urlRe      = regexp.MustCompile(`https?://[^\s,'"]+`)
	audienceRe = regexp.MustCompile(`(?i)expected:?\s+(\S{1,300}?),?\s+found:?\s+(\S{1,300})`)
)

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
	// by this answer's own challenge.
	vaultTenant := safe(cmp.Or(in.VaultTenantID, challenge.TenantID), tenantChars, 256)
	if genericTenant(vaultTenant) {
		vaultTenant = ""
	}
	isExpired := strings.Contains(lmsg, "expired") || strings.Contains(lmsg, "idx10223") || strings.Contains(lmsg, "lifetime validation failed")
	notYet := strings.Contains(lmsg, "not yet valid") || strings.Contains(lmsg, "notyetvalid") ||
		strings.Contains(lmsg, "not valid yet") || strings.Contains(lmsg, "idx10222")
	specific := strings.Contains(lmsg, "akv10000") || strings.Contains(lmsg, "akv10046") ||
		strings.EqualFold(challenge.Error, "insufficient_claims")
	switch {
	case strings.Contains(lmsg, "akv10032") || strings.Contains(lmsg, "invalid issuer"):
		tenantMismatch(d, msg, vaultTenant, challenge)
	case strings.Contains(lmsg, "akv10022") || strings.Contains(lmsg, "invalid audience"):
		audienceMismatch(d, in, msg, challenge)
	case notYet:
		notYetValid(d, in, now)
	case isExpired:
		expired(d, in, now, true)
	case specific:
		rejected(d, msg, challenge)
	case !in.Token.ExpiresAt.IsZero() && in.Token.ExpiresAt.Before(now):
		expired(d, in, now, false)
	case !in.Token.NotBefore.IsZero() && in.Token.NotBefore.After(now):
		notYetValid(d, in, now)
	case vaultTenant != "" && d.Identity.TenantID != "" && !strings.EqualFold(vaultTenant, d.Identity.TenantID):
		tenantMismatch(d, msg, vaultTenant, challenge)
	default:
		rejected(d, msg, challenge)
	}
}

func tenantMismatch(d *Diagnosis, msg, vaultTenant string, challenge kvwire.Challenge) {
	d.Code = TenantMismatch
	var expected []string
	found := ""
	if i := lastIndexFold(msg, "found"); i >= 0 {
		for _, u := range urlRe.FindAllString(msg[:i], 20) {
			if t := kvwire.TenantFromAuthority(u); t != "" {
				expected = append(expected, t)
			}
		}
		if u := urlRe.FindString(msg[i:]); u != "" {
			found = kvwire.TenantFromAuthority(strings.TrimRight(u, "."))
		}
	}
	want := ""
	for _, t := range expected {
		if vaultTenant != "" && strings.EqualFold(t, vaultTenant) {
			want = t
		}
	}
	for _, t := range expected {
		if want == "" && !microsoftTenants[strings.ToLower(t)] {
			want = t
		}
	}
	if want == "" && len(expected) > 0 {
		want = expected[0]
	}
	if want == "" {
		want = vaultTenant
	}
	if want == "" {
		if t := challenge.TenantID; !genericTenant(t) {
			want = t
		}
	}
	d.ExpectedTenant = want
	// What the vault says it found is what it judged; the token's own tid
	// agrees with it except when the vault saw another token than we think.
	d.ActualTenant = cmp.Or(found, d.Identity.TenantID)
	fix := "Use an identity from the vault's tenant: set AZURE_TENANT_ID to it for a multi-tenant app registration, or federate the workload identity with an app registered there (a managed identity cannot cross tenants)."
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
	if m := audienceRe.FindStringSubmatch(msg); m != nil {
		d.ExpectedAudience = safe(strings.TrimRight(m[1], ",."), urlChars, 300)
		d.ActualAudience = safe(strings.TrimSuffix(m[2], "."), urlChars, 300)
	}
	if d.ExpectedAudience == "" {
		d.ExpectedAudience = safe(strings.TrimSuffix(cmp.Or(challenge.Resource, challenge.Scope), "/.default"), urlChars, 300)
	}
	if host := kvwire.HostOnly(in.Vault); d.ExpectedAudience == "" && !kvwire.IsIP(host) {
		// The vault's parent domain: myvault.vault.azure.net → https://vault.azure.net.
		if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") {
			d.ExpectedAudience = safe("https://"+strings.ToLower(parent), urlChars, 300)
		}
	}
	if d.ActualAudience == "" {
		d.ActualAudience = safe(strings.TrimSuffix(in.Scope, "/.default"), urlChars, 300)
	}
	want := strings.TrimSuffix(d.ExpectedAudience, "/")
	if want != "" && !strings.Contains(want, "://") && kvwire.GUID(want) == "" {
		want = "https://" + want
	}
	scope := safe(in.Scope, urlChars, 300)
	var setting string
	switch {
	case want == "":
		setting = "Set KVPROXY_TOKEN_SCOPE to the vault's resource followed by /.default (e.g. https://vault.azure.net/.default), or unset it to derive it from the vault host."
	case scope != "" && strings.EqualFold(strings.TrimSuffix(scope, "/.default"), want):
		setting = fmt.Sprintf("kvproxy asked for %s, so the credential answered with a token for another resource: check the identity endpoint (IDENTITY_ENDPOINT) or the authority in front of it.", scope)
	case scope != "":
		setting = fmt.Sprintf("KVPROXY_TOKEN_SCOPE=%s should be %s/.default (or unset it to derive it from the vault host).", scope, want)
	default:
		setting = fmt.Sprintf("Request tokens for %s/.default (KVPROXY_TOKEN_SCOPE=%s/.default).", want, want)
	}
	switch {
	case d.ActualAudience != "" && d.ExpectedAudience != "":
		d.Detail = fmt.Sprintf("The token is for %s, but the vault expects %s. %s", d.ActualAudience, d.ExpectedAudience, setting)
	case d.ExpectedAudience != "":
		d.Detail = fmt.Sprintf("The token is not for %s, the audience the vault expects. %s", d.ExpectedAudience, setting)
	default:
		d.Detail = "The token is for another resource than the vault. " + setting
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

func rejected(d *Diagnosis, msg string, challenge kvwire.Challenge) {
	d.Code = TokenRejected
	lmsg := strings.ToLower(msg)
	q := quote(msg, 300)
	var hint string
	switch {
	case strings.EqualFold(challenge.Error, "insufficient_claims"):
		hint = "The vault demands a token with more claims (continuous access evaluation): the token was revoked or the principal's access changed; kvproxy fetches a new token with the challenge's claims."
	case strings.Contains(lmsg, "akv10000"):
		hint = "No token reached the vault: kvproxy attaches one, so something between kvproxy and the vault dropped the Authorization header."
	case strings.Contains(lmsg, "akv10046"):
		hint = "The vault could not find the key that signed the token: it was not issued by Microsoft Entra ID for this cloud, or Entra ID rotated its keys (fetch a fresh token)."
	default:
		hint = "Check that the credential issues Microsoft Entra tokens for this vault's cloud and tenant."
	}
	if q == "" {
		d.Detail = "The vault rejected the token without a Key Vault error body. " + hint
		return
	}
	d.Detail = fmt.Sprintf("The vault rejected the token: %s %s", sentence(q), hint)
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

// genericTenant reports the authority names that are not a tenant.
func genericTenant(t string) bool {
	switch strings.ToLower(t) {
	case "", "common", "organizations", "consumers":
		return true
	}
	return false
}
