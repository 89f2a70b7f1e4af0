package diagnose

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/kvproxy/kvproxy/kvwire"
)

var (
	clientAddrRe = regexp.MustCompile(`(?i)client address\s*:?\s*\(?\s*([0-9a-f:.]{2,45})`)
	actionRe     = regexp.MustCompile(`(?im)^\s*Action:\s*'([^'\r\n]{1,300})'`)
	resourceRe   = regexp.MustCompile(`(?im)^\s*Resource:\s*'([^'\r\n]{1,1000})'`)
	callerRe     = regexp.MustCompile(`(?im)^\s*Caller:\s*([^\r\n]{1,1000})`)
	principalRe  = regexp.MustCompile(`(?i)application '([^'\r\n]{1,1000})' does not have`)
	permissionRe = regexp.MustCompile(`(?i)does not have (secrets|keys|certificates|storage) ([a-z]{1,40}) permission`)
	vaultLineRe  = regexp.MustCompile(`(?im)(?:^\s*Vault:\s*|key vault ')([0-9a-z-]{1,63});`)
	vaultsSegRe  = regexp.MustCompile(`(?i)/providers/microsoft\.keyvault/vaults/([^/]+)`)
	// hsmDeniedRe reads Managed HSM's local RBAC refusal (code AccessDenied,
	// no innererror): "Not authorized to access <data action> on <scope>".
	hsmDeniedRe = regexp.MustCompile(`(?i)not authorized to access (Microsoft\.KeyVault/managedHsm/[A-Za-z0-9/._-]{1,300}) on (/[A-Za-z0-9/._-]{0,300})`)
	// oboRe reads the refusal of a compound-identity access policy entry.
	oboRe = regexp.MustCompile(`(?i)requires the caller '([^'\r\n]{1,1000})' to use on-behalf-of`)
)

func forbidden(d *Diagnosis, in Input, ve kvwire.VaultError) {
	msg := ve.Text()
	lmsg := strings.ToLower(msg)
	is := ve.Is
	name := vaultName(in.Vault, msg)
	netInfo := kvwire.ParseNetworkInfo(in.NetworkInfo)
	switch {
	case is("ForbiddenByFirewall") || strings.Contains(lmsg, "client address") && strings.Contains(lmsg, "is not authorized") ||
		strings.Contains(lmsg, "network security perimeter"):
		d.Code = ForbiddenByFirewall
		mergeCaller(d, msg)
		if strings.Contains(lmsg, "perimeter") {
			perimeter(d, netInfo, msg)
		} else {
			firewall(d, netInfo, msg, name)
		}
	case is("ForbiddenByConnection") || strings.Contains(lmsg, "approved private link"):
		d.Code = ForbiddenByPrivateLink
		mergeCaller(d, msg)
		privateLink(d, in.Vault, netInfo)
	case is("ForbiddenByRbac") || strings.Contains(lmsg, "caller is not authorized to perform action on resource") ||
		hsmDeniedRe.MatchString(msg):
		// AccessDenied alone is no RBAC refusal: plain vaults answer
		// "Access denied to first party service" with it too.
		d.Code = ForbiddenByRBAC
		mergeCaller(d, msg)
		rbac(d, in.Vault, msg, name)
	case is("ForbiddenByPolicy") || permissionRe.MatchString(msg) || strings.Contains(lmsg, "not found on any access policy") ||
		oboRe.MatchString(msg):
		d.Code = ForbiddenByPolicy
		mergeCaller(d, msg)
		policy(d, in, msg, name)
	default:
		d.Code = Forbidden
		mergeCaller(d, msg)
		otherForbidden(d, ve)
	}
}

func firewall(d *Diagnosis, netInfo map[string]string, msg, name string) {
	addr, ok := clientAddress(netInfo, msg)
	others := "or reach the vault through a VNet service endpoint or a private endpoint, or let trusted Azure services bypass the firewall"
	switch {
	case ok && addr.Is4():
		d.ClientAddress = addr.String()
		d.Fix = fmt.Sprintf("az keyvault network-rule add --name %s --ip-address %s/32", cmp.Or(name, "<vault-name>"), addr)
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

// perimeter explains a refusal by the network security perimeter the vault
// is associated with: its inbound access rules decide, not the vault's
// firewall, so an IP rule or the trusted-services exception changes nothing.
func perimeter(d *Diagnosis, netInfo map[string]string, msg string) {
	addr, ok := clientAddress(netInfo, msg)
	from, prefix := "", "<address-prefix>"
	if ok {
		d.ClientAddress = addr.String()
		from = " from " + addr.String()
		if addr.Is4() {
			prefix = addr.String() + "/32"
		} else {
			prefix = addr.String() + "/128"
		}
	}
	d.Fix = fmt.Sprintf("az network perimeter profile access-rule create --resource-group <perimeter-rg> --perimeter-name <perimeter-name> --profile-name <profile-name> --name allow-kvproxy --address-prefixes %s", prefix)
	d.Detail = fmt.Sprintf("The network security perimeter the vault is associated with refused the request%s: in enforced mode its inbound access rules decide, "+
		"so the vault's own IP rules and the trusted-services exception do not apply. Add an inbound access rule for %s (or kvproxy's subscription) to the perimeter profile the vault is associated with (see fix), "+
		"or set the vault's association to transition (learning) mode while the rules are worked out.", from, prefix)
}

// clientAddress is the address the vault saw: x-ms-keyvault-network-info,
// else the message's "Client address:" line. Masked values (***, XXXX,
// IP_ADDRESS, <operator-ip>) are not addresses.
func clientAddress(netInfo map[string]string, msg string) (netip.Addr, bool) {
	if addr, ok := parseAddr(netInfo["addr"]); ok {
		return addr, true
	}
	for _, m := range clientAddrRe.FindAllStringSubmatch(msg, 4) {
		if addr, ok := parseAddr(m[1]); ok {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

func privateLink(d *Diagnosis, vault string, netInfo map[string]string) {
	host := cmp.Or(kvwire.HostOnly(vault), "the vault's host name")
	saw := ""
	if addr, ok := parseAddr(netInfo["addr"]); ok {
		d.ClientAddress = addr.String()
		saw = " (the vault saw it come from " + addr.String() + ")"
	}
	d.Detail = fmt.Sprintf("Public network access to the vault is disabled and the request did not come through an approved private endpoint%s. "+
		"Reach the vault through its private endpoint and make sure %s resolves to the endpoint's private IP (a %s private DNS zone linked to this network), or allow public access.",
		saw, host, privateZone(host))
}

// privateZone names the private DNS zone a vault host resolves through
// (the public cloud's Key Vault zone for a host of no known cloud).
func privateZone(host string) string {
	if s, ok := kvwire.LookupHost(host); ok {
		return s.PrivateZone
	}
	return "privatelink.vaultcore.azure.net"
}

func rbac(d *Diagnosis, vault, msg, name string) {
	hsmScope := ""
	if m := actionRe.FindStringSubmatch(msg); m != nil {
		d.Action = safe(m[1], actionChars, 300)
	} else if m := hsmDeniedRe.FindStringSubmatch(msg); m != nil {
		d.Action = safe(m[1], actionChars, 300)
		hsmScope = safe(m[2], actionChars, 300)
	}
	hsm := kvwire.IsManagedHSM(vault) || strings.Contains(strings.ToLower(d.Action), "/managedhsm/")
	d.SuggestedRole = suggestRole(d.Action, hsm)
	oid := cmp.Or(kvwire.GUID(d.Identity.ObjectID), "<principal-object-id>")
	ptype := principalType(d.Identity.AppID)
	what := "this request"
	if d.Action != "" {
		what = d.Action
	}
	if hsm {
		// Managed HSM has its own local RBAC: roles are assigned on the
		// HSM's data plane at a scope (/, /keys, /keys/<name>), not with
		// Azure RBAC on the resource.
		scope := cmp.Or(hsmScope, "/keys")
		if strings.Contains(strings.ToLower(d.Action), "/keys/") && scope == "/" {
			scope = "/keys"
		}
		d.Fix = fmt.Sprintf(`az keyvault role assignment create --hsm-name %s --role "%s" --assignee-object-id %s --assignee-principal-type %s --scope %s`,
			cmp.Or(name, "<hsm-name>"), d.SuggestedRole, oid, ptype, scope)
		at := ""
		if hsmScope != "" {
			at = " at scope " + hsmScope
		}
		d.Detail = fmt.Sprintf("The Managed HSM's local RBAC gives %s no role that allows %s%s. "+
			"Assign it %q at scope %s with az keyvault role assignment create --hsm-name (see fix): Managed HSM roles are assigned on the HSM itself, not with Azure RBAC, and a role held at a narrower scope does not count.",
			principal(d.Identity), what, at, d.SuggestedRole, scope)
		return
	}
	scope := ""
	if m := resourceRe.FindStringSubmatch(msg); m != nil {
		scope = vaultScope(m[1])
	}
	if scope == "" {
		scope = fmt.Sprintf("$(az keyvault show --name %s --query id -o tsv)", cmp.Or(name, "<vault-name>"))
	}
	d.Fix = fmt.Sprintf(`az role assignment create --role "%s" --assignee-object-id %s --assignee-principal-type %s --scope "%s"`,
		d.SuggestedRole, oid, ptype, scope)
	d.Detail = fmt.Sprintf("The vault uses Azure RBAC and %s holds no role on it that allows %s. "+
		"Assign it %q on the vault (see fix); a new assignment takes a few minutes to apply.", principal(d.Identity), what, d.SuggestedRole)
}

// suggestRole names the least built-in role that allows a Key Vault (or
// Managed HSM) data action.
func policy(d *Diagnosis, in Input, msg, name string) {
	kind, perm := "", ""
	if m := permissionRe.FindStringSubmatch(msg); m != nil {
		kind, perm = strings.ToLower(m[1]), m[2]
	} else {
		kind, perm = permissionFor(in.Method, in.Path)
	}
	oid := cmp.Or(kvwire.GUID(d.Identity.ObjectID), "<principal-object-id>")
	flag := map[string]string{"secrets": "--secret-permissions", "keys": "--key-permissions",
		"certificates": "--certificate-permissions", "storage": "--storage-permissions"}[kind]
	if kind != "" && perm != "" {
		d.Permission = kind + " " + perm
		d.Fix = fmt.Sprintf("az keyvault set-policy --name %s --object-id %s %s %s", cmp.Or(name, "<vault-name>"), oid, flag, perm)
	}
	if oboRe.MatchString(msg) {
		// The entry names an application and a principal together (a
		// compound identity): it admits only on-behalf-of tokens, where
		// the application acts for that principal, never the
		// application's or the principal's own token, which kvproxy sends.
		if d.Fix == "" {
			d.Fix = fmt.Sprintf("az keyvault set-policy --name %s --object-id %s", cmp.Or(name, "<vault-name>"), oid)
		}
		d.Detail = fmt.Sprintf("The vault's access policy entry for %s is a compound identity (an application id together with a principal's object id), "+
			"which admits only on-behalf-of (OBO) tokens: kvproxy sends the principal's own token. Add an access policy entry for the principal alone, "+
			"its object id without an application id (see fix), and remove the compound entry.", principal(d.Identity))
		return
	}
	compound := " If the principal has an entry that allows it, the entry is probably a compound identity (an application id with the object id), which admits only on-behalf-of tokens: add one for the principal alone."
	if d.Permission != "" {
		d.Detail = fmt.Sprintf("The vault uses access policies and none gives %s the %q permission. "+
			"Add it (see fix), or move the vault to Azure RBAC and assign a role.%s", principal(d.Identity), d.Permission, compound)
		return
	}
	d.Detail = fmt.Sprintf("The vault uses access policies and none gives %s the permission this request needs. "+
		"Add one with az keyvault set-policy --name %s --object-id %s, or move the vault to Azure RBAC and assign a role.%s",
		principal(d.Identity), cmp.Or(name, "<vault-name>"), oid, compound)
}

// permissionFor infers the access-policy permission a Key Vault REST
// request needs from its method and path.
func otherForbidden(d *Diagnosis, ve kvwire.VaultError) {
	msg := quote(ve.Text(), 300)
	code := d.VaultCode
	switch {
	case !ve.JSON && ve.Code == "" && ve.InnerCode == "":
		if msg == "" {
			d.Detail = "The vault answered 403 with no Key Vault error body: a proxy, gateway or firewall between kvproxy and the vault may have refused the request."
		} else {
			d.Detail = fmt.Sprintf("The vault answered 403 with a body that is not a Key Vault error (%q): a proxy, gateway or firewall between kvproxy and the vault may have refused the request.", msg)
		}
		return
	case strings.EqualFold(code, "SecretDisabled"):
		d.Detail = fmt.Sprintf("The vault refused the request (SecretDisabled): %s The secret version is disabled: enable it, or read another version.", sentence(msg))
	case strings.EqualFold(code, "KeyOperationForbidden"):
		d.Detail = fmt.Sprintf("The vault refused the request (KeyOperationForbidden): %s The key's permitted operations (key_ops) exclude this one: allow it on the key, or use another key.", sentence(msg))
	default:
		d.Detail = fmt.Sprintf("The vault refused the request (%s): %s", cmp.Or(code, "no code"), sentence(msg))
	}
}

// mergeCaller takes the principal the vault names in its message (a
// "Caller: appid=…;oid=…;iss=…" line, or the quoted principal of an access
// policy refusal) over what kvproxy read from the token.
func mergeCaller(d *Diagnosis, msg string) {
	var spec string
	if m := callerRe.FindStringSubmatch(msg); m != nil {
		spec = m[1]
	} else if m := principalRe.FindStringSubmatch(msg); m != nil {
		spec = m[1]
	} else if m := oboRe.FindStringSubmatch(msg); m != nil {
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
			if g := kvwire.GUID(v); g != "" {
				d.Identity.ObjectID = g
			}
		case "appid":
			if g := kvwire.GUID(v); g != "" {
				d.Identity.AppID = g
			}
		case "iss":
			if t := kvwire.TenantID(kvwire.TenantFromAuthority(v)); t != "" {
				d.Identity.TenantID = t
			}
		}
	}
}

// principal names the principal for a detail sentence.
func principal(id Identity) string {
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

// userApps are first-party public clients: a token of theirs belongs to
// a user, not to a service principal.
var userApps = map[string]bool{
	"04b07795-8ddb-461a-bbee-02f9e1bf7b46": true, // Azure CLI
	"1950a258-227b-4e31-a9cf-717495945fc2": true, // Azure PowerShell
	"872cd9fa-d31f-45e0-9eab-6e460a02d1f1": true, // Visual Studio
	"aebc6443-996d-45c2-90f0-388ff96faa56": true, // Visual Studio Code
}

func principalType(appID string) string {
	if userApps[strings.ToLower(appID)] {
		return "User"
	}
	return "ServicePrincipal"
}
