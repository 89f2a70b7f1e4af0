package kvwire

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Service is what a vault host's suffix says about it: which cloud it is in,
// whether it is a Managed HSM, the token scope it expects and the private
// DNS zone its private endpoints resolve through.
type Service struct {
	Cloud       string // "public", "china" or "usgov"
	ManagedHSM  bool
	Suffix      string // e.g. ".vault.azure.net"
	Scope       string // e.g. "https://vault.azure.net/.default"
	PrivateZone string // e.g. "privatelink.vaultcore.azure.net"
}

// Resource is the audience a token for the service carries: Scope without
// "/.default".
func (s Service) Resource() string { return ResourceFromScope(s.Scope) }

// services is the cloud table: the DNS suffixes of Key Vault and Managed
// HSM per cloud, the token scope each expects and its private DNS zone
// (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates,
// .../private-link-service and .../managed-hsm/private-link).
var services = []Service{
	{"public", false, ".vault.azure.net", "https://vault.azure.net/.default", "privatelink.vaultcore.azure.net"},
	{"public", true, ".managedhsm.azure.net", "https://managedhsm.azure.net/.default", "privatelink.managedhsm.azure.net"},
	{"china", false, ".vault.azure.cn", "https://vault.azure.cn/.default", "privatelink.vaultcore.azure.cn"},
	{"china", true, ".managedhsm.azure.cn", "https://managedhsm.azure.cn/.default", "privatelink.managedhsm.azure.cn"},
	{"usgov", false, ".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net/.default", "privatelink.vaultcore.usgovcloudapi.net"},
	{"usgov", true, ".managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net/.default", "privatelink.managedhsm.usgovcloudapi.net"},
}

// Services returns a copy of the cloud table.
func Services() []Service { return append([]Service(nil), services...) }

// LookupHost returns the service a vault host (myvault.vault.azure.net, a
// port or a trailing dot allowed) belongs to, and false when its suffix is
// none of the known ones or nothing precedes the suffix.
func LookupHost(host string) (Service, bool) {
	h := strings.ToLower(strings.TrimSuffix(HostOnly(host), "."))
	for _, s := range services {
		if strings.HasSuffix(h, s.Suffix) && len(h) > len(s.Suffix) {
			return s, true
		}
	}
	return Service{}, false
}

// ScopeForVaultHost returns the token scope for a vault host name such as
// myvault.vault.azure.net, and false when the host has no known suffix.
func ScopeForVaultHost(host string) (string, bool) {
	s, ok := LookupHost(host)
	return s.Scope, ok
}

// IsManagedHSM reports whether host is a Managed HSM host: a known Managed
// HSM suffix, or any host with a ".managedhsm." label.
func IsManagedHSM(host string) bool {
	if s, ok := LookupHost(host); ok {
		return s.ManagedHSM
	}
	return strings.Contains(strings.ToLower(HostOnly(host)), ".managedhsm.")
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

// HostOnly strips a port from a host[:port] (and the brackets of an IPv6
// literal with a port).
func HostOnly(host string) string {
	host = strings.TrimSpace(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// IsIP reports whether host (without a port) is an IP literal.
func IsIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
