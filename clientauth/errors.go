package clientauth

import "errors"

// Reason says in one word why a token was refused. The values are a fixed
// list, safe in a client-facing detail and as a metric label.
type Reason string

// The reasons a [Verifier] refuses a token.
const (
	// ReasonMissing: no bearer token was sent.
	ReasonMissing Reason = "missing"
	// ReasonMalformed: not a compact JWS with the claims a ServiceAccount
	// token carries (an exp, a subject system:serviceaccount:<ns>:<name>).
	ReasonMalformed Reason = "malformed"
	// ReasonExpired: exp is past, beyond the leeway.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: nbf or iat is in the future, beyond the leeway.
	ReasonNotYetValid Reason = "not-yet-valid"
	// ReasonWrongAudience: aud does not contain the expected audience.
	ReasonWrongAudience Reason = "wrong-audience"
	// ReasonUnknownIssuer: iss is not the configured issuer.
	ReasonUnknownIssuer Reason = "unknown-issuer"
	// ReasonBadSignature: the signature does not verify with the key named.
	ReasonBadSignature Reason = "bad-signature"
	// ReasonUnknownKey: the issuer has no key with the token's kid, even
	// after a refetch.
	ReasonUnknownKey Reason = "unknown-key"
	// ReasonUnsupportedAlgorithm: alg is none, an HMAC or unknown.
	ReasonUnsupportedAlgorithm Reason = "unsupported-algorithm"
	// ReasonIssuerUnreachable: the issuer's discovery document or keys
	// could not be fetched, so no token can be checked. Unlike the others
	// this is kvproxy's problem, not the client's.
	ReasonIssuerUnreachable Reason = "issuer-unreachable"
)

// Reasons lists every [Reason], for a metric's zero series or a doc table.
func Reasons() []Reason {
	return []Reason{ReasonMissing, ReasonMalformed, ReasonExpired, ReasonNotYetValid,
		ReasonWrongAudience, ReasonUnknownIssuer, ReasonBadSignature, ReasonUnknownKey,
		ReasonUnsupportedAlgorithm, ReasonIssuerUnreachable}
}

// Error is why a token was refused. Detail is one line for the client and
// the log: it never contains the token, and names only what kvproxy
// expected (the audience, the issuer) or the token's own key id and
// algorithm, both cut to a bounded length.
type Error struct {
	Reason Reason
	Detail string
	// Err is an underlying error, for the operator's log: a fetch error
	// for ReasonIssuerUnreachable; nil otherwise.
	Err error
}

func (e *Error) Error() string {
	s := "client token refused: " + string(e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the [Reason] of an [*Error] in err's chain, or "" when
// there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(r Reason, detail string) *Error { return &Error{Reason: r, Detail: detail} }
