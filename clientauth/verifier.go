package clientauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/sync/singleflight"
)

// Defaults of [Options].
const (
	DefaultAudience        = "kvproxy"
	DefaultLeeway          = 30 * time.Second
	DefaultRefetchInterval = 10 * time.Second
	DefaultKeyMaxAge       = 10 * time.Minute
	DefaultFetchTimeout    = 10 * time.Second
)

// Options configure a [Verifier]. Issuer is required.
type Options struct {
	// Issuer is the cluster's ServiceAccount token issuer, an https URL
	// (`kubectl get --raw /.well-known/openid-configuration` shows it). A
	// token's iss must equal it exactly.
	Issuer string
	// Audience tokens must carry in aud (default [DefaultAudience]).
	Audience string
	// TokenFile, when set, holds a bearer token sent with every request
	// for the discovery document and the keys, read afresh each time (the
	// kubelet rotates it). The in-cluster API server requires one. It is
	// sent to the issuer and to the jwks_uri the issuer's discovery
	// document names, nowhere else.
	TokenFile string
	// CAFile is a PEM bundle of extra roots trusted for the issuer's TLS,
	// used only when HTTPClient is nil. Empty with TokenFile set: the file
	// ca.crt beside TokenFile when it exists (Kubernetes mounts the
	// cluster's CA there with a ServiceAccount token).
	CAFile string
	// HTTPClient fetches the discovery document and keys. nil: a client of
	// its own with the system roots plus CAFile (never a process-wide
	// default). The fetch is bounded by FetchTimeout whatever the client.
	HTTPClient *http.Client
	// Now is the clock for exp, nbf and iat and for the refetch interval
	// (default time.Now).
	Now func() time.Time
	// Leeway tolerates clock skew when checking exp, nbf and iat
	// (default [DefaultLeeway], 30s; a negative value means none).
	Leeway time.Duration
	// RefetchInterval: an unknown kid makes the verifier fetch the keys
	// again at most once per interval (default [DefaultRefetchInterval]).
	RefetchInterval time.Duration
	// KeyMaxAge: keys older than this are fetched again at the next
	// verification, so a key the cluster withdrew stops being accepted
	// (default [DefaultKeyMaxAge]). When that fetch fails the held keys
	// stay in use.
	KeyMaxAge time.Duration
	// FetchTimeout bounds one fetch of discovery and keys (default
	// [DefaultFetchTimeout]).
	FetchTimeout time.Duration
}

// Verifier verifies ServiceAccount tokens of one issuer and audience. It is
// safe for concurrent use; verifying with cached keys takes no lock.
type Verifier struct {
	o            Options
	discoveryURL string
	client       *http.Client
	keys         atomic.Pointer[keySet]
	sf           singleflight.Group

	mu        sync.Mutex
	lastFetch time.Time // last fetch attempt (rate limit)
	lastErr   error     // error of the last fetch, nil after a success
}

// NewVerifier checks o and returns a Verifier. It makes no request: the
// keys are fetched at the first [Verifier.Verify] or [Verifier.Refresh].
func NewVerifier(o Options) (*Verifier, error) {
	u, err := url.Parse(o.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("clientauth: issuer %q is no https URL without query or fragment", o.Issuer)
	}
	if o.Audience == "" {
		o.Audience = DefaultAudience
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Leeway == 0 {
		o.Leeway = DefaultLeeway
	} else if o.Leeway < 0 {
		o.Leeway = 0
	}
	if o.RefetchInterval <= 0 {
		o.RefetchInterval = DefaultRefetchInterval
	}
	if o.KeyMaxAge <= 0 {
		o.KeyMaxAge = DefaultKeyMaxAge
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	v := &Verifier{
		o:            o,
		discoveryURL: strings.TrimSuffix(o.Issuer, "/") + "/.well-known/openid-configuration",
		client:       o.HTTPClient,
	}
	if v.client == nil {
		v.client, err = newClient(o)
		if err != nil {
			return nil, err
		}
	}
	return v, nil
}

func newClient(o Options) (*http.Client, error) {
	caFile := o.CAFile
	if caFile == "" && o.TokenFile != "" {
		if sib := filepath.Join(filepath.Dir(o.TokenFile), "ca.crt"); fileExists(sib) {
			caFile = sib
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("clientauth: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("clientauth: CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr}, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Audience returns the audience tokens must carry.
func (v *Verifier) Audience() string { return v.o.Audience }

// Issuer returns the issuer tokens must come from.
func (v *Verifier) Issuer() string { return v.o.Issuer }

func (v *Verifier) now() time.Time { return v.o.Now() }

// Refresh fetches the issuer's keys now, subject to the refetch interval,
// and returns the fetch's error. kvproxy can call it at start to report an
// unreachable issuer early; Verify does not need it.
func (v *Verifier) Refresh(ctx context.Context) error {
	_, err := v.refetch(ctx)
	return err
}

// Verify checks raw, a ServiceAccount token, and returns whom it names.
// Every failure is an [*Error]; raw appears in none of them.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	if raw == "" {
		return Identity{}, refuse(ReasonMissing, "no bearer token (send the projected ServiceAccount token as Authorization: Bearer <token>)")
	}
	h, e := parseHeader(raw)
	if e != nil {
		return Identity{}, e
	}
	tok, err := jwt.ParseSigned(raw, algorithms)
	if err != nil {
		return Identity{}, refuse(ReasonMalformed, "not a signed JWT")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Identity{}, refuse(ReasonMalformed, "claims are not a JSON object of JWT claims")
	}
	// A foreign issuer's token is refused before any key lookup, so it
	// cannot make kvproxy refetch keys.
	if unverified.Issuer != v.o.Issuer {
		return Identity{}, refuse(ReasonUnknownIssuer, "want iss "+quoteShort(v.o.Issuer))
	}

	ks, err := v.currentKeys(ctx)
	if err != nil {
		return Identity{}, err
	}
	cands := ks.byID(h.Kid)
	if len(cands) == 0 {
		if ks, err = v.refetch(ctx); ks == nil {
			return Identity{}, &Error{Reason: ReasonIssuerUnreachable, Detail: "cannot fetch the issuer's keys", Err: err}
		}
		if cands = ks.byID(h.Kid); len(cands) == 0 {
			return Identity{}, refuse(ReasonUnknownKey, "the issuer has no key with kid "+quoteShort(h.Kid))
		}
	}
	var claims jwt.Claims
	verified := false
	for _, k := range cands {
		if k.Algorithm != "" && k.Algorithm != h.Alg {
			continue
		}
		if tok.Claims(k.Key, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Identity{}, refuse(ReasonBadSignature, "signature does not verify with the issuer's key "+quoteShort(h.Kid))
	}
	return v.checkClaims(claims)
}

// checkClaims checks the verified claims and takes the subject.
func (v *Verifier) checkClaims(c jwt.Claims) (Identity, error) {
	now, leeway := v.now(), v.o.Leeway
	if c.Issuer != v.o.Issuer {
		return Identity{}, refuse(ReasonUnknownIssuer, "want iss "+quoteShort(v.o.Issuer))
	}
	if !c.Audience.Contains(v.o.Audience) {
		return Identity{}, refuse(ReasonWrongAudience, "want aud "+quoteShort(v.o.Audience)+" (the projected token's audience)")
	}
	if c.Expiry == nil {
		return Identity{}, refuse(ReasonMalformed, "no exp (a projected ServiceAccount token has one; legacy Secret tokens are not accepted)")
	}
	if now.Add(-leeway).After(c.Expiry.Time()) {
		return Identity{}, refuse(ReasonExpired, "exp passed")
	}
	if c.NotBefore != nil && now.Add(leeway).Before(c.NotBefore.Time()) {
		return Identity{}, refuse(ReasonNotYetValid, "nbf in the future")
	}
	if c.IssuedAt != nil && now.Add(leeway).Before(c.IssuedAt.Time()) {
		return Identity{}, refuse(ReasonNotYetValid, "iat in the future")
	}
	id, ok := ParseSubject(c.Subject)
	if !ok {
		return Identity{}, refuse(ReasonMalformed, "sub is not system:serviceaccount:<namespace>:<name>")
	}
	return id, nil
}

// currentKeys returns the cached keys, fetching them when none are held or
// they are older than KeyMaxAge (keeping the old ones if that fails).
func (v *Verifier) currentKeys(ctx context.Context) (*keySet, error) {
	ks := v.keys.Load()
	if ks != nil && v.now().Sub(ks.fetchedAt) < v.o.KeyMaxAge {
		return ks, nil
	}
	fresh, err := v.refetch(ctx)
	if fresh != nil {
		return fresh, nil
	}
	return nil, &Error{Reason: ReasonIssuerUnreachable, Detail: "cannot fetch the issuer's keys", Err: err}
}

// errRateLimited is returned by refetch when the last fetch was too recent.
var errRateLimited = errors.New("keys were fetched less than the refetch interval ago")

// refetch fetches the keys unless the last attempt is less than
// RefetchInterval old; concurrent callers share one fetch, which runs under
// a context no single caller can cancel. It returns the keys held after it
// (possibly older ones, or nil when none were ever fetched) and the error of
// the fetch, or of the last one when it did not fetch.
func (v *Verifier) refetch(ctx context.Context) (*keySet, error) {
	ch := v.sf.DoChan("keys", func() (any, error) {
		v.mu.Lock()
		if !v.lastFetch.IsZero() && v.now().Sub(v.lastFetch) < v.o.RefetchInterval {
			err := v.lastErr
			v.mu.Unlock()
			if err == nil {
				err = errRateLimited
			}
			return nil, err
		}
		v.lastFetch = v.now()
		v.mu.Unlock()

		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.o.FetchTimeout)
		defer cancel()
		ks, err := v.fetchKeys(fctx)
		v.mu.Lock()
		v.lastErr = err
		v.mu.Unlock()
		if err != nil {
			return nil, err
		}
		v.keys.Store(ks)
		return nil, nil
	})
	select {
	case r := <-ch:
		return v.keys.Load(), r.Err
	case <-ctx.Done():
		return v.keys.Load(), ctx.Err()
	}
}
