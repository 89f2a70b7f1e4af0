package diagnose

import (
	"net/http"
	"slices"
	"strings"
)

func suggestRole(action string, hsm bool) string {
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
		// Managed HSM local RBAC built-in roles
		// (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
		switch {
		case strings.Contains(a, "/roleassignments/") || strings.Contains(a, "/roledefinitions/"):
			return "Managed HSM Policy Administrator"
		case strings.Contains(a, "/securitydomain/"):
			return "Managed HSM Administrator"
		case strings.Contains(a, "/backup/") || strings.Contains(a, "/restore/"):
			return "Managed HSM Backup"
		case last == "release":
			return "Managed HSM Crypto Service Release User"
		case crypto:
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

// vaultScope cuts an ARM resource id down to its vault
// (…/providers/Microsoft.KeyVault/vaults/<name>); "" when it names none or
// holds a character a shell or az would trip on.
func vaultScope(resource string) string {
	loc := vaultsSegRe.FindStringSubmatchIndex(resource)
	if loc == nil {
		return ""
	}
	scope := resource[:loc[1]]
	if !strings.HasPrefix(scope, "/subscriptions/") || safe(scope, scopeChars, 1000) != scope {
		return ""
	}
	return scope
}

// pathShape tests the lower-cased, non-empty segments of a request path
// (segs[0] is the collection: secrets, keys, deletedcertificates, …).
type pathShape func(segs []string) bool

var (
	anyPath pathShape = func([]string) bool { return true }
	// root: the collection itself (/secrets).
	root pathShape = func(s []string) bool { return len(s) == 1 }
	// listing: a list: the collection, or an item's versions.
	listing pathShape = func(s []string) bool { return len(s) == 1 || len(s) == 3 && s[2] == "versions" }
)

// lastIs: the last segment is one of names (an operation: /keys/k/v/sign).
func lastIs(names ...string) pathShape {
	return func(s []string) bool {
		for _, n := range names {
			if s[len(s)-1] == n {
				return true
			}
		}
		return false
	}
}

// under: the second segment is name (/certificates/issuers/…); with n > 0,
// the path also has exactly n segments.
func under(name string, n int) pathShape {
	return func(s []string) bool { return len(s) >= 2 && s[1] == name && (n == 0 || len(s) == n) }
}

// Method sets of the permission table; GET includes HEAD.
var (
	reads   = []string{http.MethodGet, http.MethodHead}
	puts    = []string{http.MethodPut}
	patches = []string{http.MethodPatch}
	sets    = []string{http.MethodPut, http.MethodPatch}
	deletes = []string{http.MethodDelete}
	posts   = []string{http.MethodPost}
	all     = []string(nil)
)

// permissionRule maps requests to the access-policy permission they need.
type permissionRule struct {
	collection string   // the path's first segment
	methods    []string // nil: any method
	shape      pathShape
	kind, perm string // perm "": the path's last segment names it
}

// deletedRules are the rules of a deleted* collection of kind.
func deletedRules(collection, kind string) []permissionRule {
	return []permissionRule{
		{collection, reads, root, kind, "list"},
		{collection, reads, anyPath, kind, "get"},
		{collection, deletes, anyPath, kind, "purge"},
		{collection, posts, lastIs("recover"), kind, "recover"},
	}
}

// permissionRules is the Key Vault REST API's access-policy permission per
// operation (learn.microsoft.com/azure/key-vault/general/rbac-access-policy
// and the REST reference); the first rule that matches wins.
var permissionRules = concat(
	[]permissionRule{
		{"secrets", reads, listing, "secrets", "list"},
		{"secrets", reads, anyPath, "secrets", "get"},
		{"secrets", sets, anyPath, "secrets", "set"},
		{"secrets", deletes, anyPath, "secrets", "delete"},
		{"secrets", posts, lastIs("backup", "restore"), "secrets", ""},
	},
	deletedRules("deletedsecrets", "secrets"),
	[]permissionRule{
		{"keys", reads, listing, "keys", "list"},
		{"keys", reads, anyPath, "keys", "get"},
		{"keys", puts, anyPath, "keys", "import"},
		{"keys", patches, anyPath, "keys", "update"},
		{"keys", deletes, anyPath, "keys", "delete"},
		{"keys", posts, lastIs("create", "backup", "restore", "rotate", "release", "encrypt", "decrypt", "sign", "verify"), "keys", ""},
		{"keys", posts, lastIs("wrapkey"), "keys", "wrapKey"},
		{"keys", posts, lastIs("unwrapkey"), "keys", "unwrapKey"},
	},
	deletedRules("deletedkeys", "keys"),
	[]permissionRule{
		{"certificates", all, under("contacts", 0), "certificates", "managecontacts"},
		{"certificates", reads, under("issuers", 2), "certificates", "listissuers"},
		{"certificates", reads, under("issuers", 0), "certificates", "getissuers"},
		{"certificates", deletes, under("issuers", 0), "certificates", "deleteissuers"},
		{"certificates", all, under("issuers", 0), "certificates", "setissuers"},
		{"certificates", reads, listing, "certificates", "list"},
		{"certificates", reads, anyPath, "certificates", "get"},
		{"certificates", patches, anyPath, "certificates", "update"},
		{"certificates", deletes, anyPath, "certificates", "delete"},
		{"certificates", posts, lastIs("create", "import", "backup", "restore"), "certificates", ""},
	},
	deletedRules("deletedcertificates", "certificates"),
)

func concat[T any](parts ...[]T) []T {
	var out []T
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// permissionFor infers the access-policy permission a Key Vault REST
// request needs from its method and path; "", "" when no rule knows it.
func permissionFor(method, path string) (kind, perm string) {
	var segs []string
	for _, s := range strings.Split(strings.ToLower(path), "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 {
		return "", ""
	}
	for _, r := range permissionRules {
		if r.collection != segs[0] || r.methods != nil && !slices.Contains(r.methods, method) || !r.shape(segs) {
			continue
		}
		if r.perm == "" {
			return r.kind, segs[len(segs)-1]
		}
		return r.kind, r.perm
	}
	return "", ""
}
