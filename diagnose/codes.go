package diagnose

// Diagnosis codes: the values of the X-Kvproxy-Diagnosis header, of the
// "diagnosis" member kvproxy adds to error bodies, and of the diagnosis label
// of kvproxy_diagnoses_total. They are a contract: keep them as they are.
const (
	// kvproxy's own refusals and failures: nothing, or nothing whole,
	// reached the vault.
	MetadataHeaderMissing = "metadata-header-missing"
	ReadOnly              = "read-only"
	BodyTooLarge          = "body-too-large"
	BodyUnreadable        = "body-unreadable"
	InvalidRequestTarget  = "invalid-request-target"
	MethodNotAllowed      = "method-not-allowed"
	TokenUnavailable      = "token-unavailable"
	UpstreamUnavailable   = "upstream-unavailable"
	HostNotAllowed        = "host-not-allowed"
	MalformedRequest      = "malformed-request"
	ClientUnauthenticated = "client-unauthenticated"
	ClientNotAllowed      = "client-not-allowed"
	Overloaded            = "overloaded"

	// The vault's own 403 and 401 answers, explained.
	ForbiddenByFirewall    = "forbidden-by-firewall"
	ForbiddenByPrivateLink = "forbidden-by-private-link"
	ForbiddenByRBAC        = "forbidden-by-rbac"
	ForbiddenByPolicy      = "forbidden-by-access-policy"
	Forbidden              = "forbidden"
	TenantMismatch         = "tenant-mismatch"
	AudienceMismatch       = "audience-mismatch"
	TokenExpired           = "token-expired"
	TokenRejected          = "token-rejected"

	// The vault's own 429 and 5xx answers, passed on after kvproxy's
	// retries.
	VaultThrottled   = "vault-throttled"
	VaultUnavailable = "vault-unavailable"
)

// Code describes one diagnosis code.
type Code struct {
	Name string
	// Status is the HTTP status the client gets with it, as the README's
	// tables write it ("502 / 504" when it depends).
	Status string
	// Vault is true for explanations of the vault's own answers, false for
	// kvproxy's refusals and failures.
	Vault bool
}

// codes is the one list of every diagnosis code; Codes, the metric's zero
// series and the README's diagnostics table (checked by a test) derive from it.
var codes = []Code{
	{MetadataHeaderMissing, "400", false},
	{ReadOnly, "405", false},
	{BodyTooLarge, "413", false},
	{BodyUnreadable, "400", false},
	{InvalidRequestTarget, "400", false},
	{MethodNotAllowed, "405", false},
	{TokenUnavailable, "503", false},
	{UpstreamUnavailable, "502 / 504", false},
	{HostNotAllowed, "421", false},
	{MalformedRequest, "400 / 408 / 431", false},
	{ClientUnauthenticated, "401 / 503", false},
	{ClientNotAllowed, "403", false},
	{Overloaded, "503", false},
	{ForbiddenByFirewall, "403", true},
	{ForbiddenByPrivateLink, "403", true},
	{ForbiddenByRBAC, "403", true},
	{ForbiddenByPolicy, "403", true},
	{Forbidden, "403", true},
	{TenantMismatch, "401", true},
	{AudienceMismatch, "401", true},
	{TokenExpired, "401", true},
	{TokenRejected, "401", true},
	{VaultThrottled, "429", true},
	{VaultUnavailable, "500 / 502 / 503 / 504", true},
}

// Codes returns every diagnosis code kvproxy can attach, its own refusals
// included, so counters can start at zero for each (an alert on increase()
// then sees the first one).
func Codes() []string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = c.Name
	}
	return out
}

// All returns every diagnosis code with its description.
func All() []Code { return append([]Code(nil), codes...) }
