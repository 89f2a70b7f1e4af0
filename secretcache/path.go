package secretcache

import (
	"net/url"
	"strings"
)

// collections are the item collections whose single-item reads are cached.
var collections = [...]string{"secrets", "keys", "certificates"}

// maxNameLen is Key Vault's limit on an object name (1-127 characters of
// 0-9, a-z, A-Z and '-'), from the "About keys, secrets and certificates"
// docs (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates).
const maxNameLen = 127

// versionLen is the length of a Key Vault object version: 32 hexadecimal
// digits, as in the ids the vault returns ("…/secrets/name/4387e9f3d6e14c459867679a90fd0f79").
const versionLen = 32

// Cacheable reports whether a request of method to path reads one item
// whose 200 answer the cache may keep, and names that item for
// invalidation ("secrets/db-password"; lower case, as Key Vault names are
// case-insensitive).
//
// path is the request path as forwarded to the vault, still escaped. Only
// GET of /{secrets|keys|certificates}/{name}, the same with a trailing
// slash (the latest version, as the Azure SDKs ask for it) and
// /{collection}/{name}/{version} qualify. Lists (/secrets,
// /secrets/{name}/versions), deleted items, /certificates/contacts and
// /certificates/issuers, policies and operations do not: a version must be
// 32 hexadecimal digits and a name only letters, digits and '-', so a word
// such as "versions" or "policy" or any escaped byte never matches.
func Cacheable(method, path string) (name string, ok bool) {
	if method != "GET" {
		return "", false
	}
	coll, item, rest, ok := splitItem(path)
	if !ok || (coll == "certificates" && (item == "contacts" || item == "issuers")) {
		return "", false
	}
	if rest != "" && !isVersion(rest) {
		return "", false
	}
	return itemName(path, coll, item), true
}

// readOnlyPosts are the key operations (POST /keys/{name}/{version}/{op})
// and read-only POSTs that change nothing a GET returns.
var readOnlyPosts = [...]string{"encrypt", "decrypt", "sign", "verify", "wrapkey", "unwrapkey", "release", "backup"}

// Invalidates reports whether a successful request of method to path may
// change what a read of an item returns, and names that item. The proxy
// calls [Cache.Invalidate] with it before it answers a 2xx to such a
// request. PUT, PATCH, POST and DELETE under /{collection}/{name} qualify,
// and so do those under /deleted{collection}/{name} (a recovered item
// reappears), except the key operations (sign, encrypt, …) and backup,
// which change nothing.
func Invalidates(method, path string) (name string, ok bool) {
	switch method {
	case "PUT", "PATCH", "POST", "DELETE":
	default:
		return "", false
	}
	deleted := false
	if len(path) > len("/deleted") && strings.EqualFold(path[:len("/deleted")], "/deleted") {
		deleted = true
		path = "/" + path[len("/deleted"):]
	}
	coll, item, rest, ok := splitItem(path)
	if !ok || (coll == "certificates" && (item == "contacts" || item == "issuers")) {
		return "", false
	}
	if method == "POST" && !deleted && rest != "" {
		last := rest[strings.LastIndexByte(rest, '/')+1:]
		for _, op := range readOnlyPosts {
			if strings.EqualFold(last, op) {
				return "", false
			}
		}
	}
	return itemName(path, coll, item), true
}

// splitItem splits "/{collection}/{name}[/{rest}]" into the lower-case
// collection, the name and rest ("" when there is none or when the path
// ends with a slash after the name). It fails unless the collection is one
// of [collections] and the name is a valid Key Vault name.
func splitItem(path string) (coll, item, rest string, ok bool) {
	p, found := strings.CutPrefix(path, "/")
	if !found {
		return "", "", "", false
	}
	first, p, found := strings.Cut(p, "/")
	if !found {
		return "", "", "", false // a list such as /secrets
	}
	for _, c := range collections {
		if strings.EqualFold(first, c) {
			coll = c
		}
	}
	if coll == "" {
		return "", "", "", false
	}
	item, rest, _ = strings.Cut(p, "/")
	if !isName(item) {
		return "", "", "", false
	}
	return coll, item, rest, true
}

// itemName is "collection/name" in lower case: a slice of path, with no
// allocation, when path is already in lower case.
func itemName(path, coll, item string) string {
	return lowerASCII(path[1 : 1+len(coll)+1+len(item)])
}

func isName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

func isVersion(s string) bool {
	if len(s) != versionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Key is the cache key of a read: path in lower case (Key Vault names and
// versions are case-insensitive), then the query exactly as the client sent
// it, with "api-version=" and defaultAPIVersion appended when it carries no
// non-empty api-version, as the proxy does to the request it forwards. So
// "?api-version=7.5" and no query share an entry when 7.5 is the default;
// other parameters are neither reordered nor decoded.
func Key(path, rawQuery, defaultAPIVersion string) string {
	if !hasAPIVersion(rawQuery) {
		v := "api-version=" + url.QueryEscape(defaultAPIVersion)
		if rawQuery == "" {
			rawQuery = v
		} else {
			rawQuery += "&" + v
		}
	}
	return lowerASCII(path) + "?" + rawQuery
}

// lowerASCII folds A-Z only (strings.ToLower would also rewrite other
// bytes, such as invalid UTF-8); it returns s itself when there is nothing
// to fold.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && !('A' <= s[i] && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// hasAPIVersion is the proxy's test: a parameter "api-version=" with a value.
func hasAPIVersion(rawQuery string) bool {
	for q := rawQuery; q != ""; {
		var part string
		part, q, _ = strings.Cut(q, "&")
		if strings.HasPrefix(part, "api-version=") && len(part) > len("api-version=") {
			return true
		}
	}
	return false
}
