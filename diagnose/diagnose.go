// Package diagnose explains why Azure Key Vault or Managed HSM refused a
// request: [Diagnose] takes what kvproxy knows of a 401 or 403 (the vault's
// status, body and headers, the token's claims, the configured scope and
// host) in plain values and returns a [Diagnosis]: a code from [Codes], a
// detail naming the cause and the fix, and the identifiers involved, never a
// token. [EnrichBody] adds it to the vault's JSON body.
//
// It is a pure rules engine: no I/O, no HTTP library types, no state. The
// wire formats it reads come from package kvwire. Files: forbidden.go (403),
// unauthorized.go (401), permissions.go (the access-policy permission and
// RBAC role tables), enrich.go, text.go (quoting and sanitising).
package diagnose

import (
	"cmp"
	"net/http"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Identity names the principal whose token was sent: its tenant, object id
// and application (client) id. None of them is a secret.
type Identity struct {
	TenantID string `json:"tid,omitempty"`
	ObjectID string `json:"oid,omitempty"`
	AppID    string `json:"appid,omitempty"`
}

// Input is what kvproxy knows when the vault refuses a request, in plain
// values: no HTTP library's types, so the data path can change its HTTP
// engine without touching the rules.
type Input struct {
	Status int    // the vault's status code
	Body   []byte // the vault's response body; may be truncated or not JSON

	// Challenge is the vault's WWW-Authenticate challenge, parsed once by
	// the caller with kvwire.ParseChallenge (zero when there was none).
	Challenge kvwire.Challenge
	// NetworkInfo is the x-ms-keyvault-network-info header.
	NetworkInfo string
	// RequestID is the x-ms-request-id header, to quote to Azure support.
	RequestID string

	Method, Path string // the request; Path without the query

	Vault string // vault host, e.g. myvault.vault.azure.net

	// Token holds the claims of the token that was sent (zero when none
	// was, or it is not a JWT). Only identifiers and dates are read.
	Token kvwire.Claims

	// Retries is how many times kvproxy sent the request again before
	// passing on a 429 or 5xx; FirstStatus is the vault's first answer
	// then (0 when unknown).
	Retries, FirstStatus int

	Scope         string // the scope kvproxy requested tokens for (KVPROXY_TOKEN_SCOPE when set)
	VaultTenantID string // the vault's tenant learned from its verified challenge; "" when unknown

	Now time.Time
}

// Diagnosis is kvproxy's explanation of a 401 or 403 from the vault, added to
// the vault's JSON body under "kvproxy". It holds identifiers (tenant,
// object and application ids, addresses), never a token.
type Diagnosis struct {
	Code      string   `json:"diagnosis"` // one of [Codes]
	Detail    string   `json:"detail"`    // one or two sentences: what happened and the fix
	Identity  Identity `json:"identity"`  // the principal, as the vault saw it when it says
	Vault     string   `json:"vault"`
	RequestID string   `json:"requestId,omitempty"` // x-ms-request-id, for Azure support
	VaultCode string   `json:"vaultCode,omitempty"` // innererror.code, else error.code

	ClientAddress string `json:"clientAddress,omitempty"` // the source address the vault saw
	Action        string `json:"action,omitempty"`        // RBAC: the data action denied
	SuggestedRole string `json:"suggestedRole,omitempty"` // RBAC: the least role that allows it
	Permission    string `json:"permission,omitempty"`    // access policy: e.g. "secrets get"

	ExpectedTenant   string `json:"expectedTenant,omitempty"`
	ActualTenant     string `json:"actualTenant,omitempty"`
	ExpectedAudience string `json:"expectedAudience,omitempty"`
	ActualAudience   string `json:"actualAudience,omitempty"`

	TokenExpiresAt string `json:"tokenExpiresAt,omitempty"` // RFC 3339
	TokenNotBefore string `json:"tokenNotBefore,omitempty"` // RFC 3339

	// Fix is a command that resolves the refusal (az role assignment create,
	// az keyvault set-policy, az keyvault network-rule add), when one does.
	Fix string `json:"fix,omitempty"`
}

// Diagnose explains a 401 or 403 from the vault, and a 429 or a 500, 502,
// 503 or 504 it passes on; it returns nil for any other status. It reads Key Vault's error body ({"error":{"code","message",
// "innererror":{"code"}}}), tolerating truncated and non-JSON bodies, the
// x-ms-keyvault-network-info and x-ms-request-id headers, and what kvproxy
// knows of the token; a zero Now means time.Now(). Values taken from the
// vault's answer are checked before they reach Fix or Identity, and anything
// shaped like a token is redacted from the vault's message before it is
// quoted. Detail and Fix are single lines.
func Diagnose(in Input) *Diagnosis {
	switch in.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return nil
	}
	ve := kvwire.ParseVaultError(in.Body)
	d := &Diagnosis{
		Identity:  Identity{TenantID: in.Token.TenantID, ObjectID: in.Token.ObjectID, AppID: in.Token.AppID},
		Vault:     in.Vault,
		RequestID: safe(in.RequestID, idChars, 128),
		VaultCode: safe(cmp.Or(ve.InnerCode, ve.Code), idChars, 64),
	}
	// A tid that is not a GUID (a placeholder such as XXX, or "common")
	// names no tenant.
	d.Identity.TenantID = kvwire.TenantID(d.Identity.TenantID)
	d.Identity.ObjectID = safe(d.Identity.ObjectID, idChars, 128)
	d.Identity.AppID = safe(d.Identity.AppID, idChars, 128)
	switch in.Status {
	case http.StatusForbidden:
		forbidden(d, in, ve)
	case http.StatusUnauthorized:
		unauthorized(d, in, ve)
	default:
		unavailable(d, in)
	}
	d.Detail = oneLine(d.Detail)
	d.Fix = oneLine(d.Fix)
	return d
}
