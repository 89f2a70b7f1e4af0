// Package kvwire reads the wire formats of Azure Key Vault, Managed HSM and
// Microsoft Entra ID that kvproxy depends on: the vault's WWW-Authenticate
// challenge ([ParseChallenge]), the tenant in an authority or issuer URL
// ([TenantFromAuthority]) and whether a value is a tenant at all ([TenantID]),
// access token claims ([ParseClaims]), a quoted JWT header ([ParseJWTHeader]),
// the vault's error body ([ParseVaultError]), the x-ms-keyvault-network-info
// header ([ParseNetworkInfo]), the cloud table of hosts, scopes and private
// DNS zones ([LookupHost]) and the one redaction of token-shaped text
// ([Redact]).
//
// It is pure: standard library only, no I/O, no state. Every parser takes
// input an attacker may control, bounds what it reads, never panics and is
// fuzzed. Everything in kvproxy that reads one of these formats uses this
// package, so two readers can never disagree.
package kvwire
