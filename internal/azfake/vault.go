package azfake

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Names of secrets that make the vault refuse the request the way a real vault
// would in some misconfiguration, whatever the caller's token. A playground can
// show every diagnosis with one valid token.
const (
	SecretForbiddenFirewall    = "forbidden-firewall"     // 403 ForbiddenByFirewall
	SecretForbiddenPrivateLink = "forbidden-private-link" // 403 ForbiddenByConnection
	SecretForbiddenRBAC        = "forbidden-rbac"         // 403 ForbiddenByRbac
	SecretForbiddenPolicy      = "forbidden-policy"       // 403 ForbiddenByPolicy
	SecretForbiddenDisabled    = "forbidden-disabled"     // 403 SecretDisabled
	SecretUnauthorizedTenant   = "unauthorized-tenant"    // 401 AKV10032, as for a token of tenant ForeignTenantID
	SecretUnauthorizedAudience = "unauthorized-audience"  // 401 AKV10022, as for a token for https://storage.azure.com
	SecretUnauthorizedExpired  = "unauthorized-expired"   // 401 TokenExpired, as for a token that expired 10 minutes ago
	SecretUnauthorizedRejected = "unauthorized-rejected"  // 401 AKV10046, as for a token signed by an unknown key
	SecretThrottled            = "throttled"              // 429 Throttled with Retry-After: 1
)

// ForeignTenantID is the tenant the vault reports for SecretUnauthorizedTenant.
const ForeignTenantID = "00000000-0000-0000-0000-0000000000aa"

const (
	vaultRegion         = "westeurope"
	vaultServiceVersion = "1.9.1234.5"
	defaultVaultName    = "kvproxy-dev"
	defaultVaultAud     = "https://vault.azure.net"
	maxRecordedBody     = 4 << 20
	maxListResults      = 25
	recoverableDays     = 90
)

// Other tenants Key Vault lists as accepted issuers in AKV10032 (Microsoft's
// first-party tenants).
var extraIssuerTenants = []string{"f8cdef31-a31e-4b4a-93e4-5f571e91255a", "e2d54eb5-3869-4f70-8578-dee5fc7331f4"}

var secretNameRE = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

// VaultOptions configure a [Vault].
type VaultOptions struct {
	// Name is the vault name used in messages; default "kvproxy-dev".
	Name string
	// TenantID is the vault's tenant; tokens of another tid get 401 AKV10032.
	// Default DefaultTenantID.
	TenantID string
	// Audience is the expected token aud; default "https://vault.azure.net".
	Audience string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Faults, when not nil, injects latency and failures (tests only).
	Faults *VaultFaults
}

// RecordedRequest is one request as the vault received it.
type RecordedRequest struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte // up to 4 MiB
	// Token is the bearer token received, "" if none.
	Token string
	// Claims are the token's claims when its signature is valid, else nil.
	Claims *TokenClaims
}

// maxRecorded bounds the requests a Vault remembers (the newest are kept).
const maxRecorded = 10000

// Vault is an in-memory Azure Key Vault serving the secrets API (api-version
// 7.x bodies). It is safe for concurrent use. NewVault seeds the secrets
// db-password and api-key.
//
// Every request goes through, in order: response headers and recording;
// the latency and failures of [VaultOptions].Faults; the bearer token (401s);
// the special secret names (SecretForbiddenFirewall and friends); the
// api-version parameter (400); the secrets API.
type Vault struct {
	o   VaultOptions
	srv server

	mu       sync.Mutex
	secrets  map[string][]*secretVersion // versions oldest first
	requests []RecordedRequest
}

type secretVersion struct {
	version          string
	value            string
	contentType      string
	tags             map[string]string
	created, updated int64
}

// NewVault returns a vault seeded with db-password = "correct-horse-battery-staple"
// and api-key = "kv-demo-0f9c".
func NewVault(o VaultOptions) *Vault {
	if o.Name == "" {
		o.Name = defaultVaultName
	}
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.Audience == "" {
		o.Audience = defaultVaultAud
	}
	o.Now = orNow(o.Now)
	if o.Faults == nil {
		o.Faults = new(VaultFaults) // injects nothing
	}
	v := &Vault{o: o, secrets: map[string][]*secretVersion{}}
	v.SetSecret("db-password", "correct-horse-battery-staple")
	v.SetSecret("api-key", "kv-demo-0f9c")
	return v
}

// Start serves the vault over TLS with t.ServerConfig on 127.0.0.1:0, or on
// addr when it is not empty, and returns the base URL "https://127.0.0.1:PORT".
func (v *Vault) Start(t *TLS, addr string) (string, error) {
	return v.srv.start(v, addr, v.o.Faults.tlsConfig(t.ServerConfig))
}

// Close stops a vault started with Start.
func (v *Vault) Close() error { return v.srv.close() }

// SetSecret adds a new version of secret name holding value.
func (v *Vault) SetSecret(name, value string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.putLocked(name, value, "", nil)
}

func (v *Vault) putLocked(name, value, contentType string, tags map[string]string) *secretVersion {
	now := v.o.Now().Unix()
	sv := &secretVersion{
		version:     newVersion(),
		value:       value,
		contentType: contentType,
		tags:        tags,
		created:     now,
		updated:     now,
	}
	v.secrets[name] = append(v.secrets[name], sv)
	return sv
}

// newVersion returns 32 lowercase hex characters, like Key Vault's versions.
func newVersion() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Requests returns a deep copy of the requests received, in order: the
// newest 10,000, so a long-running playground does not grow without bound.
func (v *Vault) Requests() []RecordedRequest {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]RecordedRequest, len(v.requests))
	for i, r := range v.requests {
		r.Header = r.Header.Clone()
		r.Body = slices.Clone(r.Body)
		if r.Claims != nil {
			c := *r.Claims
			r.Claims = &c
		}
		out[i] = r
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (v *Vault) ResetRequests() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.requests = nil
}

// kvError is Key Vault's error body.
type kvError struct {
	Error kvErrorDetail `json:"error"`
}

type kvErrorDetail struct {
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	InnerError *innerError `json:"innererror,omitempty"`
}

type innerError struct {
	Code string `json:"code"`
}

func writeKVError(w http.ResponseWriter, status int, code, inner, msg string) {
	e := kvError{Error: kvErrorDetail{Code: code, Message: msg}}
	if inner != "" {
		e.Error.InnerError = &innerError{Code: inner}
	}
	writeJSON(w, status, e)
}

// op is a secrets operation, with the names the RBAC and access-policy
// messages use for it.
type op struct {
	action     string // RBAC data action
	permission string // access-policy permission
}

var (
	opGet    = op{"Microsoft.KeyVault/vaults/secrets/getSecret/action", "get"}
	opSet    = op{"Microsoft.KeyVault/vaults/secrets/setSecret/action", "set"}
	opDelete = op{"Microsoft.KeyVault/vaults/secrets/delete/action", "delete"}
	opList   = op{"Microsoft.KeyVault/vaults/secrets/readMetadata/action", "list"}
)

// route is a parsed request path.
type route struct {
	found    bool   // under /secrets
	list     bool   // /secrets
	name     string // /secrets/{name}...
	version  string // /secrets/{name}/{version}
	versions bool   // /secrets/{name}/versions
}

func parseRoute(p string) route {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if segs[0] != "secrets" || len(segs) > 3 {
		return route{}
	}
	if len(segs) == 1 {
		return route{found: true, list: true}
	}
	rt := route{found: true, name: segs[1]}
	if len(segs) == 3 {
		if segs[2] == "versions" {
			rt.versions = true
		} else {
			rt.version = segs[2]
		}
	}
	return rt
}

// operation maps method and route to an operation; ok is false for a method
// the route does not support.
func (rt route) operation(method string) (o op, ok bool) {
	switch method {
	case http.MethodGet, http.MethodHead:
		if rt.list || rt.versions {
			return opList, true
		}
		return opGet, true
	case http.MethodPut:
		return opSet, rt.name != "" && rt.version == "" && !rt.versions
	case http.MethodDelete:
		return opDelete, rt.name != "" && rt.version == "" && !rt.versions
	}
	return op{}, false
}

// ServeHTTP implements the vault.
func (v *Vault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r.RemoteAddr)
	h := w.Header()
	h.Set("x-ms-request-id", uuid.NewString())
	h.Set("x-ms-keyvault-region", vaultRegion)
	h.Set("x-ms-keyvault-service-version", vaultServiceVersion)
	h.Set("x-ms-keyvault-network-info", networkInfo(ip))

	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
	token := bearerToken(r.Header.Get("Authorization"))
	rec := RecordedRequest{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
		Token:    token,
	}
	claims, tokenErr := ParseToken(token)
	if tokenErr == nil {
		rec.Claims = &claims
	}

	v.mu.Lock()
	if len(v.requests) >= maxRecorded {
		// Keep the newest; a long-running playground must not grow forever.
		copy(v.requests, v.requests[len(v.requests)-maxRecorded+1:])
		v.requests = v.requests[:maxRecorded-1]
	}
	v.requests = append(v.requests, rec)
	v.mu.Unlock()

	w, answered := v.o.Faults.intercept(w, r)
	if answered {
		return
	}

	if token == "" {
		v.unauthorized(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if tokenErr != nil {
		v.unauthorized(w, invalidTokenMessage(token, tokenErr))
		return
	}
	if msg := v.tokenProblem(claims); msg != "" {
		v.unauthorized(w, msg)
		return
	}

	rt := parseRoute(r.URL.Path)
	o, opOK := rt.operation(r.Method)
	if opOK && rt.name != "" && v.special(w, rt.name, o, claims, ip) {
		return
	}

	if r.URL.Query().Get("api-version") == "" {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid or missing api-version parameter.")
		return
	}
	if !rt.found {
		writeKVError(w, http.StatusNotFound, "BadParameter", "", "The request URI contains an unsupported path: "+r.URL.Path)
		return
	}
	if !opOK {
		h.Set("Allow", allowed(rt))
		writeKVError(w, http.StatusMethodNotAllowed, "BadParameter", "", fmt.Sprintf("The method %s is not allowed on %s.", r.Method, r.URL.Path))
		return
	}
	if rt.name != "" && !secretNameRE.MatchString(rt.name) {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid name: "+rt.name)
		return
	}

	base := "https://" + r.Host
	switch {
	case rt.list:
		v.list(w, r, base, "")
	case rt.versions:
		v.list(w, r, base, rt.name)
	case o == opGet:
		v.get(w, base, rt.name, rt.version)
	case o == opSet:
		v.put(w, base, rt.name, body)
	case o == opDelete:
		v.delete(w, base, rt.name)
	}
}

func allowed(rt route) string {
	if rt.list || rt.versions || rt.version != "" {
		return "GET, HEAD"
	}
	return "GET, HEAD, PUT, DELETE"
}

func writeInjectedFailure(w http.ResponseWriter, status int) {
	switch status {
	case http.StatusTooManyRequests:
		writeKVError(w, status, "Throttled", "", throttledMessage)
	case http.StatusServiceUnavailable:
		writeKVError(w, status, "ServiceUnavailable", "", "The service is temporarily unavailable. Please retry the request.")
	case http.StatusInternalServerError:
		writeKVError(w, status, "InternalServerError", "", "The server encountered an internal error. Please retry the request.")
	default:
		text := http.StatusText(status)
		if text == "" {
			text = "Status " + strconv.Itoa(status)
		}
		writeKVError(w, status, strings.ReplaceAll(text, " ", ""), "", text+".")
	}
}

const throttledMessage = "Request was not allowed because application has exceeded the maximum request limit. Reason: VaultRequestTypeLimitReached."

// unauthorized answers 401 with the challenge every Key Vault 401 carries.
func (v *Vault) unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, v.o.TenantID, v.o.Audience))
	writeKVError(w, http.StatusUnauthorized, "Unauthorized", "", msg)
}

// invalidTokenMessage words the 401 for a token that is not one of ours.
// Not checked against a captured response: AKV10046 is Key Vault's real
// message for a signature key it cannot resolve (the situation of a token
// signed with another key); the malformed-token text is made up.
func invalidTokenMessage(token string, err error) string {
	if err == errBadSignature {
		header, _, _ := strings.Cut(token, ".")
		return fmt.Sprintf("AKV10046: Unable to resolve the key used for signature validation. EncodedJwtHeader: '%s'.", header)
	}
	return "AKV10013: Invalid token: the token is malformed."
}

// tokenProblem validates audience, issuer tenant and lifetime, in that order,
// and returns the 401 message of the first failure, or "".
func (v *Vault) tokenProblem(c TokenClaims) string {
	if c.Audience != v.o.Audience {
		return fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", v.o.Audience, c.Audience)
	}
	if c.TenantID != v.o.TenantID {
		found := c.Issuer
		if found == "" {
			found = stsIssuer(c.TenantID)
		}
		return v.issuerMessage(found)
	}
	now := v.o.Now()
	if !c.ExpiresAt.After(now) {
		return expiredMessage
	}
	if c.NotBefore.After(now) {
		// Managed HSM's wording for this case (reported in
		// Azure/azure-sdk-for-java#26624); Key Vault's was not found.
		return fmt.Sprintf("Token not yet valid (Activity ID: %s)", uuid.NewString())
	}
	return ""
}

// expiredMessage is Key Vault's answer to an expired token, as captured in
// Azure/azure-sdk-for-python#27266.
const expiredMessage = "[TokenExpired] Error validating token: 'S2S12086'."

func (v *Vault) issuerMessage(found string) string {
	expected := []string{stsIssuer(v.o.TenantID)}
	for _, t := range extraIssuerTenants {
		expected = append(expected, stsIssuer(t))
	}
	return fmt.Sprintf("AKV10032: Invalid issuer. Expected one of %s, found %s.", strings.Join(expected, ", "), found)
}

// special answers for the special secret names; it reports whether it did.
func (v *Vault) special(w http.ResponseWriter, name string, o op, c TokenClaims, ip string) bool {
	caller := fmt.Sprintf("appid=%s;oid=%s;iss=%s", c.AppID, c.ObjectID, stsIssuer(c.TenantID))
	vault := fmt.Sprintf("Vault: %s;location=%s", v.o.Name, vaultRegion)
	switch name {
	case SecretForbiddenFirewall:
		writeKVError(w, http.StatusForbidden, "Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: "+ip+"\r\nCaller: "+caller+"\r\n"+vault)
	case SecretForbiddenPrivateLink:
		writeKVError(w, http.StatusForbidden, "Forbidden", "ForbiddenByConnection",
			"Connection is not an approved private link and caller was ignored because bypass is not set to 'AzureServices' and PublicNetworkAccess is set to 'Disabled'.\r\n"+vault)
	case SecretForbiddenRBAC:
		resource := fmt.Sprintf("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/kvproxy-dev/providers/microsoft.keyvault/vaults/%s/secrets/%s", v.o.Name, name)
		writeKVError(w, http.StatusForbidden, "Forbidden", "ForbiddenByRbac",
			"Caller is not authorized to perform action on resource.\r\n"+
				"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n"+
				"Caller: "+caller+"\r\n"+
				"Action: '"+o.action+"'\r\n"+
				"Resource: '"+resource+"'\r\n"+
				"Assignment: (not found)\r\n"+
				"DenyAssignmentId: null\r\n"+
				"DecisionReason: 'DeniedWithNoValidRBAC' \r\n"+
				vault)
	case SecretForbiddenPolicy:
		writeKVError(w, http.StatusForbidden, "Forbidden", "ForbiddenByPolicy",
			fmt.Sprintf("The user, group or application '%s' does not have secrets %s permission on key vault '%s;location=%s'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
				caller, o.permission, v.o.Name, vaultRegion))
	case SecretForbiddenDisabled:
		writeKVError(w, http.StatusForbidden, "Forbidden", "SecretDisabled",
			fmt.Sprintf("Operation %s is not allowed on a disabled secret.", o.permission))
	case SecretUnauthorizedTenant:
		v.unauthorized(w, v.issuerMessage(stsIssuer(ForeignTenantID)))
	case SecretUnauthorizedAudience:
		v.unauthorized(w, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", v.o.Audience, "https://storage.azure.com"))
	case SecretUnauthorizedExpired:
		v.unauthorized(w, expiredMessage)
	case SecretUnauthorizedRejected:
		v.unauthorized(w, "AKV10046: Unable to resolve the key used for signature validation. EncodedJwtHeader: 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9'.")
	case SecretThrottled:
		w.Header().Set("Retry-After", "1")
		writeKVError(w, http.StatusTooManyRequests, "Throttled", "", throttledMessage)
	default:
		return false
	}
	return true
}

// attributes are a secret's attributes as Key Vault returns them.
type attributes struct {
	Enabled         bool   `json:"enabled"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

// secretItem is an entry of a list answer.
type secretItem struct {
	ID          string            `json:"id"`
	Attributes  attributes        `json:"attributes"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// secretBundle is a secret with its value.
type secretBundle struct {
	Value       string            `json:"value"`
	ContentType string            `json:"contentType,omitempty"`
	ID          string            `json:"id"`
	Attributes  attributes        `json:"attributes"`
	Tags        map[string]string `json:"tags,omitempty"`
}

type deletedSecretBundle struct {
	secretBundle
	RecoveryID         string `json:"recoveryId"`
	DeletedDate        int64  `json:"deletedDate"`
	ScheduledPurgeDate int64  `json:"scheduledPurgeDate"`
}

type secretList struct {
	Value    []secretItem `json:"value"`
	NextLink *string      `json:"nextLink"`
}

func (sv *secretVersion) attributes() attributes {
	return attributes{Enabled: true, Created: sv.created, Updated: sv.updated, RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: recoverableDays}
}

func (sv *secretVersion) bundle(base, name string) secretBundle {
	return secretBundle{
		Value:       sv.value,
		ContentType: sv.contentType,
		ID:          base + "/secrets/" + name + "/" + sv.version,
		Attributes:  sv.attributes(),
		Tags:        sv.tags,
	}
}

func secretNotFound(w http.ResponseWriter, id string) {
	writeKVError(w, http.StatusNotFound, "SecretNotFound", "",
		"A secret with (name/id) "+id+" was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
}

func (v *Vault) get(w http.ResponseWriter, base, name, version string) {
	v.mu.Lock()
	versions := v.secrets[name]
	var sv *secretVersion
	if version == "" && len(versions) > 0 {
		sv = versions[len(versions)-1]
	}
	for _, x := range versions {
		if version != "" && x.version == version {
			sv = x
		}
	}
	v.mu.Unlock()
	if sv == nil {
		id := name
		if version != "" {
			id += "/" + version
		}
		secretNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, sv.bundle(base, name))
}

func (v *Vault) put(w http.ResponseWriter, base, name string, body []byte) {
	var req struct {
		Value       *string           `json:"value"`
		ContentType string            `json:"contentType"`
		Tags        map[string]string `json:"tags"`
	}
	// Not checked against a captured response: both messages are made up.
	if err := json.Unmarshal(body, &req); err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "", "The request body is not valid JSON: "+err.Error())
		return
	}
	if req.Value == nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "", "Property 'value' is required.")
		return
	}
	v.mu.Lock()
	sv := v.putLocked(name, *req.Value, req.ContentType, req.Tags)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, sv.bundle(base, name))
}

func (v *Vault) delete(w http.ResponseWriter, base, name string) {
	v.mu.Lock()
	versions := v.secrets[name]
	delete(v.secrets, name)
	v.mu.Unlock()
	if len(versions) == 0 {
		secretNotFound(w, name)
		return
	}
	now := v.o.Now()
	writeJSON(w, http.StatusOK, deletedSecretBundle{
		secretBundle:       versions[len(versions)-1].bundle(base, name),
		RecoveryID:         base + "/deletedsecrets/" + name,
		DeletedDate:        now.Unix(),
		ScheduledPurgeDate: now.AddDate(0, 0, recoverableDays).Unix(),
	})
}

// list answers GET /secrets (name == "") and GET /secrets/{name}/versions.
// Pages hold maxresults items (1..25, default 25); a page that is not the
// last has a nextLink carrying an opaque $skiptoken, as Key Vault's does.
func (v *Vault) list(w http.ResponseWriter, r *http.Request, base, name string) {
	q := r.URL.Query()
	limit := maxListResults
	if s := q.Get("maxresults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListResults {
			writeKVError(w, http.StatusBadRequest, "BadParameter", "", fmt.Sprintf("Invalid value for maxresults: %q. It must be an integer from 1 to %d.", s, maxListResults))
			return
		}
		limit = n
	}
	skip := 0
	if s := q.Get("$skiptoken"); s != "" {
		b, err := base64.RawURLEncoding.DecodeString(s)
		n, convErr := strconv.Atoi(string(b))
		if err != nil || convErr != nil || n < 0 {
			writeKVError(w, http.StatusBadRequest, "BadParameter", "", "Invalid $skiptoken.")
			return
		}
		skip = n
	}

	var items []secretItem
	v.mu.Lock()
	if name == "" {
		for n, versions := range v.secrets {
			latest := versions[len(versions)-1]
			items = append(items, secretItem{ID: base + "/secrets/" + n, Attributes: latest.attributes(), ContentType: latest.contentType, Tags: latest.tags})
		}
	} else {
		for _, sv := range v.secrets[name] {
			items = append(items, secretItem{ID: base + "/secrets/" + name + "/" + sv.version, Attributes: sv.attributes(), ContentType: sv.contentType, Tags: sv.tags})
		}
	}
	known := len(v.secrets[name]) > 0
	v.mu.Unlock()
	if name != "" && !known {
		secretNotFound(w, name)
		return
	}
	slices.SortFunc(items, func(a, b secretItem) int { return strings.Compare(a.ID, b.ID) })

	page := secretList{Value: []secretItem{}}
	if skip < len(items) {
		page.Value = items[skip:min(skip+limit, len(items))]
	}
	if next := skip + limit; next < len(items) {
		nq := url.Values{}
		nq.Set("api-version", q.Get("api-version"))
		nq.Set("$skiptoken", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(next))))
		nq.Set("maxresults", strconv.Itoa(limit))
		link := base + strings.TrimSuffix(r.URL.Path, "/") + "?" + nq.Encode()
		page.NextLink = &link
	}
	writeJSON(w, http.StatusOK, page)
}

// bearerToken returns the token of an "Authorization: Bearer <t>" header.
func bearerToken(auth string) string {
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// clientIP returns the host part of a RemoteAddr.
func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

func networkInfo(ip string) string {
	connType, family := "Ipv4", "InterNetwork"
	if p := net.ParseIP(ip); p != nil && p.To4() == nil {
		connType, family = "Ipv6", "InterNetworkV6"
	}
	return fmt.Sprintf("conn_type=%s;addr=%s;act_addr_fam=%s;", connType, ip, family)
}
