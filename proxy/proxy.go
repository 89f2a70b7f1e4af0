package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/accesspolicy"
	"github.com/kvproxy/kvproxy/clientauth"
	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/secretcache"
)

// TokenSource hands out the access token to inject; *auth.Cache satisfies
// it. Any error from it means no token can be had: the client gets 503
// token-unavailable with the error's text as the detail, so that text must
// hold no secret.
type TokenSource interface {
	// Token returns a token that is not expired.
	Token(ctx context.Context) (azcore.AccessToken, error)
	// Renew replaces a token the vault rejected (answered 401): it returns
	// a token other than rejected, or an error. challenge is the 401's
	// parsed WWW-Authenticate, which may carry a CAE claims challenge.
	Renew(ctx context.Context, rejected string, challenge kvwire.Challenge) (azcore.AccessToken, error)
}

// Options configure a Proxy. Vault and Tokens are required.
type Options struct {
	// Vault is the one upstream, https://host[:port]. Nothing a client sends
	// can change it.
	Vault  *url.URL
	Tokens TokenSource
	// Scope is the token scope in use (named by audience diagnoses).
	Scope string
	// OnChallenge, when set, receives the parsed WWW-Authenticate challenge
	// of each 401 the client gets from the vault (*auth.Challenges.Observe
	// learns the vault's tenant from it).
	OnChallenge func(kvwire.Challenge)
	// RootCAs trusted toward the vault; nil uses the system roots
	// (SSL_CERT_FILE and SSL_CERT_DIR are honoured).
	RootCAs *x509.CertPool
	// AllowedHosts are the Host values accepted besides IP literals and
	// localhost (KVPROXY_ALLOWED_HOSTS), against DNS rebinding; see
	// [ServerOptions.CheckHost].
	AllowedHosts    []string
	APIVersion      string        // added when a request has no api-version
	RequireMetadata bool          // refuse requests without "Metadata: true"
	ReadOnly        bool          // refuse every method but GET and HEAD
	MaxBodyBytes    int64         // larger request bodies get 413
	UpstreamTimeout time.Duration // deadline per request, retries included
	// RetryMax retries of a request the vault answered 429 (any method) or
	// 503 (GET and HEAD), waiting Retry-After up to RetryMaxWait.
	RetryMax     int
	RetryMaxWait time.Duration
	// DiagnosisLogInterval: per diagnosis code, the first WARN line is
	// written, then at most one per interval with the count of those
	// suppressed (default 10s), so a client cannot flood the log.
	DiagnosisLogInterval time.Duration
	// MaxBufferedBytes bounds the bytes of request bodies held in memory at
	// once (default 32 MiB, at least MaxBodyBytes): room for a body is
	// reserved before it is read, and a request that finds none within
	// BufferWait (default 5s) gets 503 overloaded.
	MaxBufferedBytes int64
	BufferWait       time.Duration
	// MaxConnsPerHost bounds the connections to the vault (default 512).
	MaxConnsPerHost int
	Metrics         *metrics.Metrics // nil records nothing
	Logger          *slog.Logger
	// ClientAuth, when set, requires every request to carry a client's
	// Kubernetes ServiceAccount token (Authorization: Bearer), verified
	// before anything else is done for it (401 client-unauthenticated);
	// Policy then decides what the token's subject may do (403
	// client-not-allowed). The client's token is never forwarded, logged or
	// echoed.
	ClientAuth *clientauth.Verifier
	// Policy returns the access policy in force (with ClientAuth; nil
	// denies everything).
	Policy func() *accesspolicy.Policy
	// Cache, when set, answers reads of single items from memory
	// (KVPROXY_CACHE_TTL); see package secretcache.
	Cache *secretcache.Cache
	// OnRequest, when set, receives one record per request, refusals
	// included (the audit log).
	OnRequest func(RequestRecord)
}

// RequestRecord is what the audit log says of one request. It holds no
// token, no query and no value.
type RequestRecord struct {
	Time           time.Time
	Client         string // the verified subject with ClientAuth, else the remote address
	Method, Path   string // the path without its query
	Status         int
	Diagnosis      string // X-Kvproxy-Diagnosis sent, or ""
	Cache          string // X-Cache sent, or ""
	VaultRequestID string
	Duration       time.Duration
}

// maxResponseBody bounds a vault answer kvproxy accepts: Key Vault's largest
// are list pages and certificates with their chain, far below it.
const maxResponseBody = 4 << 20

// Proxy is the data path: a fasthttp request handler that forwards to the
// one configured vault.
type Proxy struct {
	o        Options
	logs     *logLimiter
	client   *fasthttp.HostClient
	vault    string // host without port, for diagnoses
	vaultHdr string // Host header toward the vault
	apiVer   []byte // "api-version=<v>"
	origin   []string
	allowed  map[string]bool
	hosts    hostPolicy
	scheme   string // "https"; the in-memory benchmark's upstream is plain
	authz    atomic.Pointer[bearerHeader]
	budget   *bodyBudget
}

// New returns a Proxy.
func New(o Options) (*Proxy, error) {
	if o.Vault == nil || o.Vault.Scheme != "https" || o.Vault.Host == "" {
		return nil, errors.New("proxy: Vault must be an https URL")
	}
	if o.Tokens == nil {
		return nil, errors.New("proxy: Tokens is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.APIVersion == "" {
		o.APIVersion = "7.5"
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 30 * time.Second
	}
	if o.RetryMaxWait <= 0 {
		o.RetryMaxWait = 10 * time.Second
	}
	if o.DiagnosisLogInterval <= 0 {
		o.DiagnosisLogInterval = 10 * time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 32 << 20
	}
	o.MaxBufferedBytes = max(o.MaxBufferedBytes, o.MaxBodyBytes)
	if o.BufferWait <= 0 {
		o.BufferWait = 5 * time.Second
	}
	p := &Proxy{
		o:        o,
		logs:     newLogLimiter(o.DiagnosisLogInterval),
		client:   newHostClient(o),
		vault:    o.Vault.Hostname(),
		vaultHdr: o.Vault.Host,
		apiVer:   []byte("api-version=" + url.QueryEscape(o.APIVersion)),
		allowed:  map[string]bool{},
		scheme:   "https",
		budget:   newBodyBudget(o.MaxBufferedBytes, o.MaxBodyBytes, o.BufferWait, 0, o.Metrics),
	}
	// The vault's own origin as it may appear in a nextLink.
	p.origin = []string{"https://" + o.Vault.Host + "/"}
	if o.Vault.Port() == "" {
		p.origin = append(p.origin, "https://"+o.Vault.Host+":443/")
	} else if o.Vault.Port() == "443" {
		p.origin = append(p.origin, "https://"+o.Vault.Hostname()+"/")
	}
	for _, h := range o.AllowedHosts {
		p.allowed[normHost(h)] = true
	}
	return p, nil
}
