// Package azfake provides local stand-ins for the Azure services kvproxy talks
// to, speaking their real wire formats: an in-memory Key Vault ([Vault], secrets
// only), the App Service managed identity endpoint ([IdentityServer]), the
// IMDS managed identity endpoint of Azure VMs and AKS nodes ([IMDS]) and
// enough of Microsoft Entra ID for azidentity's WorkloadIdentityCredential and
// ClientSecretCredential ([Entra]). kvproxy's tests and `kvproxy dev` use them.
//
// Tests steer the fakes through controls kept apart from them: a
// [VaultFaults], [IdentityFaults] or [IMDSFaults] passed in the options
// injects latency, failures, answers cut off by a connection reset or
// trickled byte by byte, a TLS black hole, malformed answers, an outage or
// held requests; the playground passes none. Package
// azfaketest starts fakes for a test and stops them with it.
//
// The fakes issue and accept tokens minted by [MintToken]: JWTs signed with
// HMAC-SHA256 under a key compiled into this package. They carry the claims
// Entra ID puts in real access tokens (tid, oid, appid, aud, iss, exp, ...), so
// code that decodes claims for diagnostics behaves as it would against Azure,
// but they are worthless anywhere else.
//
// Error bodies follow what Azure returns, including the 401 challenge,
// Key Vault's firewall, RBAC and access-policy 403s, the managed identity
// endpoint's errors and Entra's AADSTS errors. Wording that could not be
// checked against a captured Azure response is marked as such where it is
// produced.
//
// Servers started by Start listen on 127.0.0.1 only, except an IMDS started
// on [IMDSAddr], which only a network namespace holding that address can
// serve. Everything is safe for concurrent use.
package azfake
