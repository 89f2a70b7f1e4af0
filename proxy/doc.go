// Package proxy is kvproxy's HTTP data path: a reverse proxy to one Key Vault
// (or Managed HSM) that injects a Microsoft Entra access token into every
// request, applies the request policy (the Metadata header, read-only mode,
// a body limit) and explains the vault's refusals.
//
// When the vault answers 401 or 403, [Diagnose] names the cause — firewall,
// private link, RBAC, access policy, tenant, audience, token lifetime — and a
// fix, and [EnrichBody] adds that diagnosis to the vault's JSON error under
// "kvproxy", next to the untouched "error" member, so SDKs keep surfacing the
// vault's own code and message. The X-Kvproxy-Diagnosis header carries the
// code for bodies that are not JSON. A diagnosis holds identifiers (tenant,
// object and application ids, addresses), never a token.
//
// The proxy asks for tokens through [TokenSource], an interface it defines,
// so it never imports the auth package.
package proxy
