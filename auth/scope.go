package auth

import (
	"fmt"
	"net/url"
	"strings"
)

// vaultSuffixes maps Key Vault and Managed HSM host suffixes to the token
// scope each cloud expects (KEYVAULT.md, "Clouds, hosts and scopes").
var vaultSuffixes = []struct{ suffix, scope string }{
	{".vault.azure.net", "https://vault.azure.net/.default"},
	{".managedhsm.azure.net", "https://managedhsm.azure.net/.default"},
	{".vault.azure.cn", "https://vault.azure.cn/.default"},
	{".managedhsm.azure.cn", "https://managedhsm.azure.cn/.default"},
	{".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net/.default"},
	{".managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net/.default"},
}

// ScopeForVaultHost returns the token scope for a vault host name such as
// myvault.vault.azure.net, and false when the host has no known suffix.
func ScopeForVaultHost(host string) (string, bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, s := range vaultSuffixes {
		if strings.HasSuffix(host, s.suffix) && len(host) > len(s.suffix) {
			return s.scope, true
		}
	}
	return "", false
}

// ValidateScope checks a token scope: an absolute https URL ending in
// /.default whose resource part has no trailing slash (Key Vault rejects an
// audience with one, AKV10022).
func ValidateScope(scope string) error {
	resource, ok := strings.CutSuffix(scope, "/.default")
	if !ok {
		return fmt.Errorf("%q must end with /.default (e.g. https://vault.azure.net/.default)", scope)
	}
	if strings.HasSuffix(resource, "/") {
		return fmt.Errorf("%q: the resource must not end with a slash; Key Vault rejects that audience (AKV10022)", scope)
	}
	u, err := url.Parse(resource)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an https resource followed by /.default", scope)
	}
	return nil
}

// ResourceFromScope strips /.default: the audience a token for scope carries.
func ResourceFromScope(scope string) string {
	return strings.TrimSuffix(scope, "/.default")
}
