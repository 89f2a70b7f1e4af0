package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Diagnosis codes of the vault's own 401 and 403 answers (a contract:
// X-Kvproxy-Diagnosis, the "kvproxy" body member and kvproxy_diagnoses_total
// use them).
const (
	DiagForbiddenByFirewall    = "forbidden-by-firewall"
	DiagForbiddenByPrivateLink = "forbidden-by-private-link"
	DiagForbiddenByRBAC        = "forbidden-by-rbac"
	DiagForbiddenByPolicy      = "forbidden-by-access-policy"
	DiagForbidden              = "forbidden"
	DiagTenantMismatch         = "tenant-mismatch"
	DiagAudienceMismatch       = "audience-mismatch"
	DiagTokenExpired           = "token-expired"
	DiagTokenRejected          = "token-rejected"
)

// Identity names the principal whose token was sent: its tenant, object id
// and application (client) id. None of them is a secret.
type Identity struct {
	TenantID string `json:"tid,omitempty"`
	ObjectID string `json:"oid,omitempty"`
	AppID    string `json:"appid,omitempty"`
}

// DiagnoseInput is what the proxy knows when the vault refuses a request.
type DiagnoseInput struct {
	Status int         // the vault's status code
	Header http.Header // the vault's response headers
	Body   []byte      // the vault's response body; may be truncated or not JSON

	Method, Path string // the request; Path without the query

	Vault string // vault host, e.g. myvault.vault.azure.net

	Identity                       Identity  // from the token that was sent
	TokenExpiresAt, TokenNotBefore time.Time // the token's exp and nbf; zero when unknown

	Scope         string // the scope kvproxy requested tokens for (KVPROXY_TOKEN_SCOPE when set)
	VaultTenantID string // the vault's tenant learned from its challenge; "" when unknown

	Now time.Time
}

// Diagnosis is kvproxy's explanation of a 401 or 403 from the vault, added to
// the vault's JSON body under "kvproxy". It holds identifiers (tenant,
// object and application ids, addresses), never a token.
type Diagnosis struct {
	Code      string   `json:"diagnosis"` // one of the Diag… constants
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

// diagMaxBody bounds the body Diagnose and EnrichBody read.
const diagMaxBody = 1 << 20

// Diagnose explains a 401 or 403 from the vault; it returns nil for any other
// status. It reads Key Vault's error body ({"error":{"code","message",
// "innererror":{"code"}}}), tolerating truncated and non-JSON bodies, the
// x-ms-keyvault-network-info and x-ms-request-id headers, and what kvproxy
// knows of the token; a zero Now means time.Now(). Values taken from the
// vault's answer are checked before they reach Fix or Identity, and anything
// shaped like a token is redacted from the vault's message before it is
// quoted. Detail and Fix are single lines.
func Diagnose(in DiagnoseInput) *Diagnosis {
	if in.Status != http.StatusUnauthorized && in.Status != http.StatusForbidden {
		return nil
	}
	ve := diagParseBody(in.Body)
	d := &Diagnosis{
		Identity:  in.Identity,
		Vault:     in.Vault,
		RequestID: diagSafe(diagHeader(in.Header, "x-ms-request-id"), diagIDChars, 128),
		VaultCode: diagSafe(diagFirst(ve.inner, ve.code), diagIDChars, 64),
	}
	d.Identity.TenantID = diagSafe(d.Identity.TenantID, diagTenantChars, 256)
	d.Identity.ObjectID = diagSafe(d.Identity.ObjectID, diagIDChars, 128)
	d.Identity.AppID = diagSafe(d.Identity.AppID, diagIDChars, 128)
	if in.Status == http.StatusForbidden {
		diagnoseForbidden(d, in, ve)
	} else {
		diagnoseUnauthorized(d, in, ve)
	}
	d.Detail = diagOneLine(d.Detail)
	d.Fix = diagOneLine(d.Fix)
	return d
}

// diagVaultError is what was read of the vault's error body.
type diagVaultError struct {
	code, inner, message string
	json                 bool // the body was a Key Vault error object
	raw                  string
}

// diagMaxMessage bounds the vault message Diagnose reads: Key Vault's are a
// few hundred bytes, and the patterns below need not scan a megabyte.
const diagMaxMessage = 16 << 10

// text is the message, or the body's text when it held no message, cut to
// diagMaxMessage bytes.
func (e diagVaultError) text() string {
	s := diagFirst(e.message, e.raw)
	if len(s) > diagMaxMessage {
		s = s[:diagMaxMessage]
	}
	return s
}

var (
	diagCodeRe    = regexp.MustCompile(`"code"\s*:\s*"((?:[^"\\]|\\.){0,200})"`)
	diagInnerRe   = regexp.MustCompile(`(?i)"inner_?error"\s*:\s*\{\s*"code"\s*:\s*"((?:[^"\\]|\\.){0,200})"`)
	diagMessageRe = regexp.MustCompile(`"message"\s*:\s*"((?:[^"\\]|\\.)*)`)
)

// diagParseBody reads Key Vault's error body. A body that does not parse
// (truncated by a proxy, or cut at diagMaxBody) is searched for its code,
// inner code and message; a body with none of them is kept as text.
func diagParseBody(body []byte) diagVaultError {
	if len(body) > diagMaxBody {
		body = body[:diagMaxBody]
	}
	var v struct {
		Error *struct {
			Code       any `json:"code"`
			Message    any `json:"message"`
			InnerError *struct {
				Code any `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && v.Error != nil {
		e := diagVaultError{json: true, code: diagAnyString(v.Error.Code), message: diagAnyString(v.Error.Message)}
		if v.Error.InnerError != nil {
			e.inner = diagAnyString(v.Error.InnerError.Code)
		}
		return e
	}
	var e diagVaultError
	if m := diagInnerRe.FindSubmatch(body); m != nil {
		e.inner = diagUnescape(m[1])
	}
	if m := diagCodeRe.FindSubmatch(body); m != nil {
		e.code = diagUnescape(m[1])
		if e.code == e.inner {
			e.code = "" // the only code found was the inner one
		}
	}
	if m := diagMessageRe.FindSubmatch(body); m != nil {
		e.message = diagUnescape(m[1])
	}
	if e.code == "" && e.inner == "" && e.message == "" {
		e.raw = string(bytes.TrimSpace(body[:min(len(body), 4096)]))
	}
	return e
}

func diagAnyString(v any) string {
	s, _ := v.(string)
	return s
}

// diagUnescape decodes the body of a JSON string that may be cut short.
func diagUnescape(b []byte) string {
	var s string
	if json.Unmarshal([]byte(`"`+string(b)+`"`), &s) == nil {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out.WriteByte(c)
			continue
		}
		if i+1 >= len(b) {
			break
		}
		i++
		switch b[i] {
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			if i+4 < len(b) {
				if r, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 32); err == nil {
					out.WriteRune(rune(r))
				}
			}
			i += 4
		default:
			out.WriteByte(b[i])
		}
	}
	return out.String()
}

// --- 403 ---

var (
	diagClientAddrRe = regexp.MustCompile(`(?i)client address\s*:?\s*\(?\s*([0-9a-f:.]{2,45})`)
	diagActionRe     = regexp.MustCompile(`(?im)^\s*Action:\s*'([^'\r\n]{1,300})'`)
	diagResourceRe   = regexp.MustCompile(`(?im)^\s*Resource:\s*'([^'\r\n]{1,1000})'`)
	diagCallerRe     = regexp.MustCompile(`(?im)^\s*Caller:\s*([^\r\n]{1,1000})`)
	diagPrincipalRe  = regexp.MustCompile(`(?i)application '([^'\r\n]{1,1000})' does not have`)
	diagPermissionRe = regexp.MustCompile(`(?i)does not have (secrets|keys|certificates|storage) ([a-z]{1,40}) permission`)
	diagVaultLineRe  = regexp.MustCompile(`(?im)(?:^\s*Vault:\s*|key vault ')([0-9a-z-]{1,63});`)
	diagVaultsSegRe  = regexp.MustCompile(`(?i)/providers/microsoft\.keyvault/vaults/([^/]+)`)
)

func diagnoseForbidden(d *Diagnosis, in DiagnoseInput, ve diagVaultError) {
	msg := ve.text()
	lmsg := strings.ToLower(msg)
	is := func(code string) bool {
		return strings.EqualFold(ve.inner, code) || strings.EqualFold(ve.code, code)
	}
	name := diagVaultName(in.Vault, msg)
	netInfo := ParseNetworkInfo(diagHeader(in.Header, "x-ms-keyvault-network-info"))
	switch {
	case is("ForbiddenByFirewall") || strings.Contains(lmsg, "client address") && strings.Contains(lmsg, "is not authorized"):
		d.Code = DiagForbiddenByFirewall
		diagMergeCaller(d, msg)
		diagFirewall(d, netInfo, msg, name)
	case is("ForbiddenByConnection") || strings.Contains(lmsg, "approved private link"):
		d.Code = DiagForbiddenByPrivateLink
		diagMergeCaller(d, msg)
		diagPrivateLink(d, in.Vault, netInfo)
	case is("ForbiddenByRbac") || strings.Contains(lmsg, "caller is not authorized to perform action on resource"):
		d.Code = DiagForbiddenByRBAC
		diagMergeCaller(d, msg)
		diagRBAC(d, in.Vault, msg, name)
	case is("ForbiddenByPolicy") || diagPermissionRe.MatchString(msg) || strings.Contains(lmsg, "not found on any access policy"):
		d.Code = DiagForbiddenByPolicy
		diagMergeCaller(d, msg)
		diagPolicy(d, in, msg, name)
	default:
		d.Code = DiagForbidden
		diagMergeCaller(d, msg)
		diagOtherForbidden(d, ve)
	}
}

func diagFirewall(d *Diagnosis, netInfo map[string]string, msg, name string) {
	addr, ok := diagParseAddr(netInfo["addr"])
	if !ok {
		for _, m := range diagClientAddrRe.FindAllStringSubmatch(msg, 4) {
			if addr, ok = diagParseAddr(m[1]); ok {
				break
			}
		}
	}
	others := "or reach the vault through a VNet service endpoint or a private endpoint, or let trusted Azure services bypass the firewall"
	switch {
	case ok && addr.Is4():
		d.ClientAddress = addr.String()
		d.Fix = fmt.Sprintf("az keyvault network-rule add --name %s --ip-address %s/32", diagOr(name, "<vault-name>"), addr)
		d.Detail = fmt.Sprintf("The vault's firewall refused the request from %s: that address is not allowed and the caller is not a trusted service. "+
			"Add %s/32 to the vault's firewall (see fix), %s.", addr, addr, others)
	case ok:
		d.ClientAddress = addr.String()
		d.Detail = fmt.Sprintf("The vault's firewall refused the request from %s: that address is not allowed and the caller is not a trusted service. "+
			"Key Vault firewall rules take IPv4 addresses only: come from an allowed IPv4 address, %s.", addr, others)
	default:
		d.Detail = "The vault's firewall refused the request: the caller's address is not allowed and the caller is not a trusted service. " +
			"Add the address kvproxy's traffic leaves from to the vault's firewall (az keyvault network-rule add), " + others + "."
	}
}

func diagPrivateLink(d *Diagnosis, vault string, netInfo map[string]string) {
	host := diagOr(diagHostOnly(vault), "the vault's host name")
	saw := ""
	if addr, ok := diagParseAddr(netInfo["addr"]); ok {
		d.ClientAddress = addr.String()
		saw = " (the vault saw it come from " + addr.String() + ")"
	}
	d.Detail = fmt.Sprintf("Public network access to the vault is disabled and the request did not come through an approved private endpoint%s. "+
		"Reach the vault through its private endpoint and make sure %s resolves to the endpoint's private IP (a %s private DNS zone linked to this network), or allow public access.",
		saw, host, diagPrivateZone(host))
}

// diagPrivateZone names the private DNS zone a vault host resolves through.
func diagPrivateZone(host string) string {
	h := strings.ToLower(host)
	for _, z := range []struct{ suffix, zone string }{
		{".vault.azure.cn", "privatelink.vaultcore.azure.cn"},
		{".vault.usgovcloudapi.net", "privatelink.vaultcore.usgovcloudapi.net"},
		{".managedhsm.azure.net", "privatelink.managedhsm.azure.net"},
		{".managedhsm.azure.cn", "privatelink.managedhsm.azure.cn"},
		{".managedhsm.usgovcloudapi.net", "privatelink.managedhsm.usgovcloudapi.net"},
	} {
		if strings.HasSuffix(h, z.suffix) {
			return z.zone
		}
	}
	return "privatelink.vaultcore.azure.net"
}

func diagRBAC(d *Diagnosis, vault, msg, name string) {
	if m := diagActionRe.FindStringSubmatch(msg); m != nil {
		d.Action = diagSafe(m[1], diagActionChars, 300)
	}
	hsm := diagIsHSM(vault) || strings.Contains(strings.ToLower(d.Action), "/managedhsm/")
	d.SuggestedRole = diagSuggestRole(d.Action, hsm)
	oid := diagOr(diagGUID(d.Identity.ObjectID), "<principal-object-id>")
	ptype := diagPrincipalType(d.Identity.AppID)
	if hsm {
		d.Fix = fmt.Sprintf(`az keyvault role assignment create --hsm-name %s --role "%s" --assignee-object-id %s --assignee-principal-type %s --scope /keys`,
			diagOr(name, "<hsm-name>"), d.SuggestedRole, oid, ptype)
	} else {
		scope := ""
		if m := diagResourceRe.FindStringSubmatch(msg); m != nil {
			scope = diagVaultScope(m[1])
		}
		if scope == "" {
			scope = fmt.Sprintf("$(az keyvault show --name %s --query id -o tsv)", diagOr(name, "<vault-name>"))
		}
		d.Fix = fmt.Sprintf(`az role assignment create --role "%s" --assignee-object-id %s --assignee-principal-type %s --scope "%s"`,
			d.SuggestedRole, oid, ptype, scope)
	}
	what := "this request"
	if d.Action != "" {
		what = d.Action
	}
	d.Detail = fmt.Sprintf("The vault uses Azure RBAC and %s holds no role on it that allows %s. "+
		"Assign it %q on the vault (see fix); a new assignment takes a few minutes to apply.", diagPrincipal(d.Identity), what, d.SuggestedRole)
}

// diagSuggestRole names the least built-in role that allows a Key Vault (or
// Managed HSM) data action.
func diagSuggestRole(action string, hsm bool) string {
	a := strings.ToLower(action)
	last := a[strings.LastIndex(a, "/")+1:]
	if last == "action" {
		t := strings.TrimSuffix(a, "/action")
		last = t[strings.LastIndex(t, "/")+1:]
	}
	crypto := false
	switch last {
	case "encrypt", "decrypt", "sign", "verify", "wrap", "unwrap", "wrapkey", "unwrapkey", "read":
		crypto = true
	}
	if hsm {
		if crypto {
			return "Managed HSM Crypto User"
		}
		return "Managed HSM Crypto Officer"
	}
	switch {
	case strings.Contains(a, "/secrets/") || strings.Contains(a, "/deletedsecrets/"):
		if last == "getsecret" || last == "readmetadata" || last == "read" {
			return "Key Vault Secrets User"
		}
		return "Key Vault Secrets Officer"
	case strings.Contains(a, "/keys/") || strings.Contains(a, "/deletedkeys/") || strings.Contains(a, "/keyrotationpolicies/"):
		if crypto && !strings.Contains(a, "/deletedkeys/") && !strings.Contains(a, "/keyrotationpolicies/") {
			return "Key Vault Crypto User"
		}
		return "Key Vault Crypto Officer"
	case strings.Contains(a, "/certificates/") && last == "read":
		return "Key Vault Certificate User"
	case strings.Contains(a, "/certificates/") || strings.Contains(a, "/deletedcertificates/") ||
		strings.Contains(a, "/certificatecas/") || strings.Contains(a, "/certificatecontacts/"):
		return "Key Vault Certificates Officer"
	case last == "read" || last == "readmetadata":
		return "Key Vault Reader"
	}
	return "Key Vault Administrator"
}

// diagVaultScope cuts an ARM resource id down to its vault
// (…/providers/Microsoft.KeyVault/vaults/<name>); "" when it names none or
// holds a character a shell or az would trip on.
func diagVaultScope(resource string) string {
	loc := diagVaultsSegRe.FindStringSubmatchIndex(resource)
	if loc == nil {
		return ""
	}
	scope := resource[:loc[1]]
	if !strings.HasPrefix(scope, "/subscriptions/") || diagSafe(scope, diagScopeChars, 1000) != scope {
		return ""
	}
	return scope
}

func diagPolicy(d *Diagnosis, in DiagnoseInput, msg, name string) {
	kind, perm := "", ""
	if m := diagPermissionRe.FindStringSubmatch(msg); m != nil {
		kind, perm = strings.ToLower(m[1]), m[2]
	} else {
		kind, perm = diagPermissionFor(in.Method, in.Path)
	}
	oid := diagOr(diagGUID(d.Identity.ObjectID), "<principal-object-id>")
	if kind != "" && perm != "" {
		d.Permission = kind + " " + perm
		flag := map[string]string{"secrets": "--secret-permissions", "keys": "--key-permissions",
			"certificates": "--certificate-permissions", "storage": "--storage-permissions"}[kind]
		d.Fix = fmt.Sprintf("az keyvault set-policy --name %s --object-id %s %s %s", diagOr(name, "<vault-name>"), oid, flag, perm)
		d.Detail = fmt.Sprintf("The vault uses access policies and none gives %s the %q permission. "+
			"Add it (see fix), or move the vault to Azure RBAC and assign a role.", diagPrincipal(d.Identity), d.Permission)
		return
	}
	d.Detail = fmt.Sprintf("The vault uses access policies and none gives %s the permission this request needs. "+
		"Add one with az keyvault set-policy --name %s --object-id %s, or move the vault to Azure RBAC and assign a role.",
		diagPrincipal(d.Identity), diagOr(name, "<vault-name>"), oid)
}

// diagPermissionFor infers the access-policy permission a Key Vault REST
// request needs from its method and path.
func diagPermissionFor(method, path string) (kind, perm string) {
	var segs []string
	for _, s := range strings.Split(strings.ToLower(path), "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 {
		return "", ""
	}
	n, last := len(segs), segs[len(segs)-1]
	get := method == http.MethodGet || method == http.MethodHead
	listing := n == 1 || (n == 3 && last == "versions")
	deleted := func(k string) (string, string) {
		switch {
		case get && n == 1:
			return k, "list"
		case get:
			return k, "get"
		case method == http.MethodDelete:
			return k, "purge"
		case method == http.MethodPost && last == "recover":
			return k, "recover"
		}
		return "", ""
	}
	switch segs[0] {
	case "secrets":
		switch {
		case get && listing:
			return "secrets", "list"
		case get:
			return "secrets", "get"
		case method == http.MethodPut || method == http.MethodPatch:
			return "secrets", "set"
		case method == http.MethodDelete:
			return "secrets", "delete"
		case method == http.MethodPost && (last == "backup" || last == "restore"):
			return "secrets", last
		}
	case "deletedsecrets":
		return deleted("secrets")
	case "keys":
		switch {
		case get && listing:
			return "keys", "list"
		case get:
			return "keys", "get"
		case method == http.MethodPut:
			return "keys", "import"
		case method == http.MethodPatch:
			return "keys", "update"
		case method == http.MethodDelete:
			return "keys", "delete"
		case method == http.MethodPost:
			switch last {
			case "create", "backup", "restore", "rotate", "release", "encrypt", "decrypt", "sign", "verify":
				return "keys", last
			case "wrapkey":
				return "keys", "wrapKey"
			case "unwrapkey":
				return "keys", "unwrapKey"
			}
		}
	case "deletedkeys":
		return deleted("keys")
	case "certificates":
		switch {
		case n >= 2 && segs[1] == "contacts":
			return "certificates", "managecontacts"
		case n >= 2 && segs[1] == "issuers":
			switch {
			case get && n == 2:
				return "certificates", "listissuers"
			case get:
				return "certificates", "getissuers"
			case method == http.MethodDelete:
				return "certificates", "deleteissuers"
			}
			return "certificates", "setissuers"
		case get && listing:
			return "certificates", "list"
		case get:
			return "certificates", "get"
		case method == http.MethodPatch:
			return "certificates", "update"
		case method == http.MethodDelete:
			return "certificates", "delete"
		case method == http.MethodPost && (last == "create" || last == "import" || last == "backup" || last == "restore"):
			return "certificates", last
		}
	case "deletedcertificates":
		return deleted("certificates")
	}
	return "", ""
}

func diagOtherForbidden(d *Diagnosis, ve diagVaultError) {
	msg := diagQuote(ve.text(), 300)
	code := d.VaultCode
	switch {
	case !ve.json && ve.code == "" && ve.inner == "":
		if msg == "" {
			d.Detail = "The vault answered 403 with no Key Vault error body: a proxy, gateway or firewall between kvproxy and the vault may have refused the request."
		} else {
			d.Detail = fmt.Sprintf("The vault answered 403 with a body that is not a Key Vault error (%q): a proxy, gateway or firewall between kvproxy and the vault may have refused the request.", msg)
		}
		return
	case strings.EqualFold(code, "SecretDisabled"):
		d.Detail = fmt.Sprintf("The vault refused the request (SecretDisabled): %s The secret version is disabled: enable it, or read another version.", diagSentence(msg))
	case strings.EqualFold(code, "KeyOperationForbidden"):
		d.Detail = fmt.Sprintf("The vault refused the request (KeyOperationForbidden): %s The key's permitted operations (key_ops) exclude this one: allow it on the key, or use another key.", diagSentence(msg))
	default:
		d.Detail = fmt.Sprintf("The vault refused the request (%s): %s", diagOr(code, "no code"), diagSentence(msg))
	}
}

// diagMergeCaller takes the principal the vault names in its message (a
// "Caller: appid=…;oid=…;iss=…" line, or the quoted principal of an access
// policy refusal) over what kvproxy read from the token.
func diagMergeCaller(d *Diagnosis, msg string) {
	var spec string
	if m := diagCallerRe.FindStringSubmatch(msg); m != nil {
		spec = m[1]
	} else if m := diagPrincipalRe.FindStringSubmatch(msg); m != nil {
		spec = m[1]
	} else {
		return
	}
	for _, kv := range strings.Split(spec, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "oid":
			if g := diagGUID(v); g != "" {
				d.Identity.ObjectID = g
			}
		case "appid":
			if g := diagGUID(v); g != "" {
				d.Identity.AppID = g
			}
		case "iss":
			if t := diagIssuerTenant(v); t != "" {
				d.Identity.TenantID = t
			}
		}
	}
}

// diagPrincipal names the principal for a detail sentence.
func diagPrincipal(id Identity) string {
	switch {
	case id.ObjectID != "" && id.AppID != "":
		return fmt.Sprintf("principal %s (app %s)", id.ObjectID, id.AppID)
	case id.ObjectID != "":
		return "principal " + id.ObjectID
	case id.AppID != "":
		return "the principal of app " + id.AppID
	}
	return "the caller"
}

// diagUserApps are first-party public clients: a token of theirs belongs to
// a user, not to a service principal.
var diagUserApps = map[string]bool{
	"04b07795-8ddb-461a-bbee-02f9e1bf7b46": true, // Azure CLI
	"1950a258-227b-4e31-a9cf-717495945fc2": true, // Azure PowerShell
	"872cd9fa-d31f-45e0-9eab-6e460a02d1f1": true, // Visual Studio
	"aebc6443-996d-45c2-90f0-388ff96faa56": true, // Visual Studio Code
}

func diagPrincipalType(appID string) string {
	if diagUserApps[strings.ToLower(appID)] {
		return "User"
	}
	return "ServicePrincipal"
}

// --- 401 ---

var (
	diagURLRe      = regexp.MustCompile(`https?://[^\s,'"]+`)
	diagAudienceRe = regexp.MustCompile(`(?i)expected:?\s+(\S{1,300}?),?\s+found:?\s+(\S{1,300})`)
)

// diagMicrosoftTenants are Microsoft's own tenants, which Key Vault lists
// among the issuers it accepts after the vault's tenant (AKV10032).
var diagMicrosoftTenants = map[string]bool{
	"72f988bf-86f1-41af-91ab-2d7cd011db47": true,
	"f8cdef31-a31e-4b4a-93e4-5f571e91255a": true,
	"e2d54eb5-3869-4f70-8578-dee5fc7331f4": true,
	"33e01921-4d64-4f8c-a055-5bdaffd5e33d": true,
	"975f013f-7f24-47e8-a7d3-abc4752bf346": true,
}

func diagnoseUnauthorized(d *Diagnosis, in DiagnoseInput, ve diagVaultError) {
	msg := ve.text()
	lmsg := strings.ToLower(msg)
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	if !in.TokenExpiresAt.IsZero() {
		d.TokenExpiresAt = in.TokenExpiresAt.UTC().Format(time.RFC3339)
	}
	if !in.TokenNotBefore.IsZero() {
		d.TokenNotBefore = in.TokenNotBefore.UTC().Format(time.RFC3339)
	}
	challenge := diagChallengeParams(strings.Join(diagHeaderValues(in.Header, "WWW-Authenticate"), ", "))
	vaultTenant := diagSafe(in.VaultTenantID, diagTenantChars, 256)
	if diagGenericTenant(vaultTenant) {
		vaultTenant = ""
	}
	expired := strings.Contains(lmsg, "expired") || strings.Contains(lmsg, "idx10223") || strings.Contains(lmsg, "lifetime validation failed")
	notYet := strings.Contains(lmsg, "not yet valid") || strings.Contains(lmsg, "notyetvalid") ||
		strings.Contains(lmsg, "not valid yet") || strings.Contains(lmsg, "idx10222")
	specific := strings.Contains(lmsg, "akv10000") || strings.Contains(lmsg, "akv10046") ||
		strings.EqualFold(challenge["error"], "insufficient_claims")
	switch {
	case strings.Contains(lmsg, "akv10032") || strings.Contains(lmsg, "invalid issuer"):
		diagTenant(d, msg, vaultTenant, challenge)
	case strings.Contains(lmsg, "akv10022") || strings.Contains(lmsg, "invalid audience"):
		diagAudience(d, in, msg, challenge)
	case notYet:
		diagNotYetValid(d, in, now)
	case expired:
		diagExpired(d, in, now, true)
	case specific:
		diagRejected(d, msg, challenge)
	case !in.TokenExpiresAt.IsZero() && in.TokenExpiresAt.Before(now):
		diagExpired(d, in, now, false)
	case !in.TokenNotBefore.IsZero() && in.TokenNotBefore.After(now):
		diagNotYetValid(d, in, now)
	case vaultTenant != "" && d.Identity.TenantID != "" && !strings.EqualFold(vaultTenant, d.Identity.TenantID):
		diagTenant(d, msg, vaultTenant, challenge)
	default:
		diagRejected(d, msg, challenge)
	}
}

func diagTenant(d *Diagnosis, msg, vaultTenant string, challenge map[string]string) {
	d.Code = DiagTenantMismatch
	var expected []string
	found := ""
	if i := diagLastIndexFold(msg, "found"); i >= 0 {
		for _, u := range diagURLRe.FindAllString(msg[:i], 20) {
			if t := diagIssuerTenant(u); t != "" {
				expected = append(expected, t)
			}
		}
		if u := diagURLRe.FindString(msg[i:]); u != "" {
			found = diagIssuerTenant(strings.TrimRight(u, "."))
		}
	}
	want := ""
	for _, t := range expected {
		if vaultTenant != "" && strings.EqualFold(t, vaultTenant) {
			want = t
		}
	}
	for _, t := range expected {
		if want == "" && !diagMicrosoftTenants[strings.ToLower(t)] {
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
		if t := diagIssuerTenant(diagFirst(challenge["authorization"], challenge["authorization_uri"])); !diagGenericTenant(t) {
			want = t
		}
	}
	d.ExpectedTenant = want
	// What the vault says it found is what it judged; the token's own tid
	// agrees with it except when the vault saw another token than we think.
	d.ActualTenant = diagFirst(found, d.Identity.TenantID)
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

func diagAudience(d *Diagnosis, in DiagnoseInput, msg string, challenge map[string]string) {
	d.Code = DiagAudienceMismatch
	if m := diagAudienceRe.FindStringSubmatch(msg); m != nil {
		d.ExpectedAudience = diagSafe(strings.TrimRight(m[1], ",."), diagURLChars, 300)
		d.ActualAudience = diagSafe(strings.TrimSuffix(m[2], "."), diagURLChars, 300)
	}
	if d.ExpectedAudience == "" {
		d.ExpectedAudience = diagSafe(strings.TrimSuffix(diagFirst(challenge["resource"], challenge["scope"]), "/.default"), diagURLChars, 300)
	}
	if host := diagHostOnly(in.Vault); d.ExpectedAudience == "" && !diagIsIP(host) {
		// The vault's parent domain: myvault.vault.azure.net → https://vault.azure.net.
		if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") {
			d.ExpectedAudience = diagSafe("https://"+strings.ToLower(parent), diagURLChars, 300)
		}
	}
	if d.ActualAudience == "" {
		d.ActualAudience = diagSafe(strings.TrimSuffix(in.Scope, "/.default"), diagURLChars, 300)
	}
	want := strings.TrimSuffix(d.ExpectedAudience, "/")
	if want != "" && !strings.Contains(want, "://") && diagGUID(want) == "" {
		want = "https://" + want
	}
	scope := diagSafe(in.Scope, diagURLChars, 300)
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

func diagExpired(d *Diagnosis, in DiagnoseInput, now time.Time, vaultSaid bool) {
	d.Code = DiagTokenExpired
	clock := now.UTC().Format(time.RFC3339)
	exp := in.TokenExpiresAt
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
			how, d.TokenExpiresAt, diagDuration(now.Sub(exp)), clock)
	default:
		d.Detail = fmt.Sprintf("The vault says the token expired, but it is valid until %s by this host's clock (%s). "+
			"This host's clock or the vault's is wrong (clock skew): check NTP on this host.", d.TokenExpiresAt, clock)
	}
}

func diagNotYetValid(d *Diagnosis, in DiagnoseInput, now time.Time) {
	d.Code = DiagTokenExpired
	clock := now.UTC().Format(time.RFC3339)
	nbf := in.TokenNotBefore
	switch {
	case nbf.IsZero():
		d.Detail = fmt.Sprintf("The vault says the token is not valid yet (this host's clock reads %s): the vault's clock and the token issuer's disagree (clock skew). "+
			"It usually passes within minutes; if it persists, check this host's clock (NTP) and quote the x-ms-request-id to Azure support.", clock)
	case nbf.After(now):
		d.Detail = fmt.Sprintf("The token is not valid before %s, %s after this host's clock (%s), so the vault refused it: clock skew between this host and Microsoft Entra ID. "+
			"Check NTP on this host.", d.TokenNotBefore, diagDuration(nbf.Sub(now)), clock)
	default:
		d.Detail = fmt.Sprintf("The vault says the token is not valid yet, but it has been valid since %s by this host's clock (%s): the vault's clock is behind (clock skew). "+
			"It usually passes within minutes; if it persists, quote the x-ms-request-id to Azure support.", d.TokenNotBefore, clock)
	}
}

func diagRejected(d *Diagnosis, msg string, challenge map[string]string) {
	d.Code = DiagTokenRejected
	lmsg := strings.ToLower(msg)
	q := diagQuote(msg, 300)
	var hint string
	switch {
	case strings.EqualFold(challenge["error"], "insufficient_claims"):
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
	d.Detail = fmt.Sprintf("The vault rejected the token: %s %s", diagSentence(q), hint)
}

// diagChallengeParams reads the auth-params of a WWW-Authenticate value,
// keys lower-cased, first value kept. It is deliberately small: the proxy
// only names the vault's tenant, resource and CAE error from it.
func diagChallengeParams(h string) map[string]string {
	out := map[string]string{}
	if len(h) > 16<<10 {
		return out
	}
	for _, m := range diagParamRe.FindAllStringSubmatch(h, 64) {
		k := strings.ToLower(m[1])
		v := m[3]
		if m[2] != "" {
			v = diagUnquote(m[2][1 : len(m[2])-1])
		}
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// diagUnquote resolves the backslash escapes of a quoted-string's content.
func diagUnquote(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var diagParamRe = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:("(?:[^"\\]|\\.)*")|([^\s,"]*))`)

// diagIssuerTenant reads the tenant from an issuer or authority URL
// (https://sts.windows.net/<tid>/, https://login.microsoftonline.com/<tid>/v2.0).
func diagIssuerTenant(iss string) string {
	u, err := url.Parse(strings.TrimSpace(iss))
	if err != nil || u.Host == "" {
		return ""
	}
	for _, s := range strings.Split(u.Path, "/") {
		if s != "" {
			return diagSafe(s, diagTenantChars, 256)
		}
	}
	return ""
}

// diagLastIndexFold is strings.LastIndex ignoring ASCII case; unlike an
// index into strings.ToLower(s), it is always an index into s.
func diagLastIndexFold(s, sub string) int {
	for i := len(s) - len(sub); i >= 0; i-- {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// diagGenericTenant reports the authority names that are not a tenant.
func diagGenericTenant(t string) bool {
	switch strings.ToLower(t) {
	case "", "common", "organizations", "consumers":
		return true
	}
	return false
}

// --- shared helpers ---

// ParseNetworkInfo reads the x-ms-keyvault-network-info header
// ("conn_type=Ipv4;addr=1.2.3.4;act_addr_fam=InterNetwork;") into a map with
// lower-cased keys. It tolerates junk: empty or key-less entries are
// skipped, the first value of a repeated key counts, and at most 32 entries
// of a value up to 4 KiB are read. The map is never nil.
func ParseNetworkInfo(v string) map[string]string {
	out := map[string]string{}
	if len(v) > 4<<10 {
		v = v[:4<<10]
	}
	for i, part := range strings.Split(v, ";") {
		if i >= 32 {
			break
		}
		k, val, ok := strings.Cut(part, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		if _, seen := out[k]; !seen {
			out[k] = strings.TrimSpace(val)
		}
	}
	return out
}

// EnrichBody returns body with a top-level "kvproxy" member holding d, and
// true. Every other member keeps its key and its value byte for byte (the
// values are copied, keys re-encoded), in order; an existing "kvproxy"
// member is replaced. When body is not a JSON object, is over 1 MiB, or d is
// nil, it returns body unchanged and false: the caller then relies on the
// X-Kvproxy-Diagnosis header. The caller updates Content-Length.
func EnrichBody(body []byte, d *Diagnosis) ([]byte, bool) {
	if d == nil || len(body) > diagMaxBody || !json.Valid(body) {
		return body, false
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return body, false
	}
	var diag bytes.Buffer
	enc := json.NewEncoder(&diag)
	enc.SetEscapeHTML(false)
	if enc.Encode(d) != nil {
		return body, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return body, false
	}
	out := make([]byte, 0, len(body)+diag.Len()+16)
	out = append(out, '{')
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return body, false
		}
		key, ok := tok.(string)
		if !ok {
			return body, false
		}
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return body, false
		}
		if key == "kvproxy" {
			continue
		}
		k, err := json.Marshal(key)
		if err != nil {
			return body, false
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, k...)
		out = append(out, ':')
		out = append(out, raw...)
		n++
	}
	if n > 0 {
		out = append(out, ',')
	}
	out = append(out, `"kvproxy":`...)
	out = append(out, bytes.TrimRight(diag.Bytes(), "\n")...)
	out = append(out, '}')
	return out, true
}

// Character sets of values that may reach a detail or a fix.
const (
	diagIDChars     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
	diagTenantChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
	diagActionChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./"
	diagScopeChars  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./()"
	diagURLChars    = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:%?=&~+"
)

// diagSafe returns s when it is at most max bytes of the given characters,
// else "".
func diagSafe(s, chars string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) > max {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(chars, s[i]) < 0 {
			return ""
		}
	}
	return s
}

// diagGUID returns s lower-cased when it is a GUID, else "".
func diagGUID(s string) string {
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

// diagParseAddr parses an IP address, unmapping IPv4-in-IPv6.
func diagParseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// diagHostOnly strips a port from a host.
func diagHostOnly(host string) string {
	host = strings.TrimSpace(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// diagVaultName is the vault's name: the first label of its host, else the
// name its message gives ("Vault: <name>;location=…").
func diagVaultName(vault, msg string) string {
	if host := diagHostOnly(vault); !diagIsIP(host) {
		label, _, _ := strings.Cut(host, ".")
		if n := diagVaultNameOK(label); n != "" {
			return n
		}
	}
	if m := diagVaultLineRe.FindStringSubmatch(msg); m != nil {
		return diagVaultNameOK(m[1])
	}
	return ""
}

// diagVaultNameOK returns s when it is a valid vault or Managed HSM name (3
// to 24 letters, digits and hyphens, starting with a letter), else "".
func diagVaultNameOK(s string) string {
	if len(s) < 3 || len(s) > 24 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !(letter || c >= '0' && c <= '9' || c == '-') {
			return ""
		}
	}
	return s
}

func diagIsIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

func diagIsHSM(vault string) bool {
	h := strings.ToLower(diagHostOnly(vault))
	return strings.Contains(h, ".managedhsm.")
}

func diagHeader(h http.Header, key string) string {
	if h == nil {
		return ""
	}
	return h.Get(key)
}

func diagHeaderValues(h http.Header, key string) []string {
	if h == nil {
		return nil
	}
	return h.Values(key)
}

func diagFirst(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func diagOr(s, placeholder string) string {
	if s == "" {
		return placeholder
	}
	return s
}

func diagDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}

// diagJWTRe matches anything shaped like a JWT or a long opaque credential.
// Slashes are left out of the second form so that resource ids, whose
// segments are short, survive.
var diagJWTRe = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*|[A-Za-z0-9_\-+=]{80,}`)

// diagQuote prepares a vault message for a detail: one line, tokens
// redacted, control characters dropped, at most max runes.
func diagQuote(s string, max int) string {
	s = diagJWTRe.ReplaceAllString(strings.ToValidUTF8(s, ""), "[REDACTED]")
	s = diagOneLine(s)
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = strings.TrimSpace(string(r[:max])) + "…"
	}
	return s
}

// diagSentence quotes a vault message and ends the sentence, unless the
// message ends one itself.
func diagSentence(msg string) string {
	if msg == "" {
		return "(no message)."
	}
	q := strconv.Quote(msg)
	if strings.HasSuffix(msg, ".") || strings.HasSuffix(msg, "!") || strings.HasSuffix(msg, "?") || strings.HasSuffix(msg, "…") {
		return q
	}
	return q + "."
}

// diagOneLine turns line breaks and other control characters into spaces
// and collapses runs of spaces.
func diagOneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "") {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
