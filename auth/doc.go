// Package auth brokers Microsoft Entra access tokens for kvproxy.
//
// It builds the azidentity credential the configuration asks for, keeps the
// current token in a [Cache] that hands it out with one atomic load, and
// refreshes it ahead of expiry in the background. Every fetch goes through
// golang.org/x/sync/singleflight, so any number of concurrent requests on a
// cold cache cause one request to the identity endpoint (azidentity itself
// does not de-duplicate). An expired token is never handed out.
//
// It also reads token claims (tenant, object id, app id) for diagnostics; a
// token itself never reaches a log, an error or a metric.
package auth
