// Package clientauth verifies the identity of a client of kvproxy's shared
// service: a Kubernetes projected ServiceAccount token, sent as
// `Authorization: Bearer <token>`.
//
// A [Verifier] checks a token's signature against the keys of one issuer,
// found by OIDC discovery (`<issuer>/.well-known/openid-configuration`, then
// its `jwks_uri`), and its `iss`, `aud`, `exp`, `nbf` and `iat` claims, and
// returns the subject `system:serviceaccount:<namespace>:<name>`. Only
// asymmetric signatures are accepted (RS*, PS*, ES*, EdDSA); `none` and the
// HMAC algorithms never are, whatever the token's header asks.
//
// Keys are cached. A token signed with a key id the cache does not hold
// makes the verifier fetch the issuer's keys again, at most once per
// [Options.RefetchInterval], and concurrent requests share that one fetch;
// so a key rotated in by the cluster is picked up within one request, and a
// flood of tokens with made-up key ids costs the issuer one request per
// interval.
//
// Every failure is an [*Error] whose [Reason] is one of a short, fixed list,
// safe to show to a client and to use as a metric label. No error, and
// nothing this package logs, contains the token or any part of it.
package clientauth
