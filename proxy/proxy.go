package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
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
	// Transport carries requests to the vault (default NewTransport).
	Transport       http.RoundTripper
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
	Metrics              *metrics.Metrics // nil records nothing
	Logger               *slog.Logger
}

// Proxy is the HTTP handler of the proxy listener.
type Proxy struct {
	o      Options
	logs   *logLimiter
	rp     *httputil.ReverseProxy
	vault  string // host, for diagnoses
	apiVer string // "api-version=<v>"
	// nextLinkRE matches a nextLink member pointing at the vault's origin.
	nextLinkRE *regexp.Regexp
}

// New returns a Proxy.
func New(o Options) (*Proxy, error) {
	if o.Vault == nil || o.Vault.Scheme != "https" || o.Vault.Host == "" {
		return nil, errors.New("proxy: Vault must be an https URL")
	}
	if o.Tokens == nil {
		return nil, errors.New("proxy: Tokens is required")
	}
	if o.Transport == nil {
		o.Transport = NewTransport(TransportOptions{ResponseHeaderTimeout: o.UpstreamTimeout})
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
	target := &url.URL{Scheme: "https", Host: o.Vault.Host}
	origin := regexp.QuoteMeta(o.Vault.Hostname())
	if port := o.Vault.Port(); port != "" && port != "443" {
		origin += ":" + regexp.QuoteMeta(port)
	} else {
		origin += "(?::443)?"
	}
	p := &Proxy{o: o, logs: newLogLimiter(o.DiagnosisLogInterval), vault: o.Vault.Hostname(), apiVer: "api-version=" + url.QueryEscape(o.APIVersion),
		nextLinkRE: regexp.MustCompile(`("nextLink"\s*:\s*")https://(?i:` + origin + `)/`)}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			if !hasAPIVersion(pr.Out.URL.RawQuery) {
				if pr.Out.URL.RawQuery == "" {
					pr.Out.URL.RawQuery = p.apiVer
				} else {
					pr.Out.URL.RawQuery += "&" + p.apiVer
				}
			}
			h := pr.Out.Header
			h.Del("Authorization") // the upstream transport sets ours
			h.Del("Proxy-Authorization")
			h.Del("Metadata")
			h.Del(HeaderDiagnosis)
			// Let the transport negotiate compression and decompress, so error
			// bodies can be read and diagnosed.
			h.Del("Accept-Encoding")
		},
		Transport:      &upstream{p: p},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// requestState travels with a request through the reverse proxy.
type requestState struct {
	body  []byte // the buffered request body (nil when none)
	token string // the token last sent, for diagnostics; never logged
	// challenge is the parsed WWW-Authenticate of the last 401 the vault
	// answered, parsed once for renewal, learning and diagnosis.
	challenge kvwire.Challenge
	requestID string // x-ms-request-id of the vault's answer
	status    int
	// inboundHost is the Host the client used, for rewriting nextLink.
	inboundHost string
}

type stateKey struct{}

func stateOf(ctx context.Context) *requestState {
	s, _ := ctx.Value(stateKey{}).(*requestState)
	return s
}

// ServeHTTP applies the request policy, then forwards to the vault.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := p.o.Metrics
	m.RequestStarted()
	st := &requestState{inboundHost: safeHost(r.Host)}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		status := sw.status
		if st.status != 0 {
			status = st.status
		}
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		m.RequestDone()
		m.ObserveRequest(r.Method, status, d.Seconds())
		if p.o.Logger.Enabled(r.Context(), slog.LevelDebug) {
			p.o.Logger.LogAttrs(r.Context(), slog.LevelDebug, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.Duration("duration", d),
				slog.String("vaultRequestId", st.requestID))
		}
	}()

	if ref, bad := p.checkRequest(r); bad {
		p.refuse(sw, ref)
		return
	}
	if r.ContentLength > p.o.MaxBodyBytes {
		p.refuse(sw, tooLarge(p.o.MaxBodyBytes))
		return
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// Buffer the whole body first: an oversized body is refused before
		// any byte reaches the vault, and the body can be replayed on retry.
		body, err := io.ReadAll(io.LimitReader(r.Body, p.o.MaxBodyBytes+1))
		if err != nil {
			p.refuse(sw, refusal{status: http.StatusBadRequest, code: "BadRequest", diagnosis: diagnose.BodyUnreadable,
				message: "The request body could not be read.", detail: "the client stopped sending the body: " + summarize(err)})
			return
		}
		if int64(len(body)) > p.o.MaxBodyBytes {
			p.refuse(sw, tooLarge(p.o.MaxBodyBytes))
			return
		}
		st.body = body
	}
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), stateKey{}, st), p.o.UpstreamTimeout)
	defer cancel()
	out := r.WithContext(ctx)
	if st.body != nil {
		out.Body = io.NopCloser(bytes.NewReader(st.body))
		out.ContentLength = int64(len(st.body))
	} else {
		out.Body = http.NoBody
		out.ContentLength = 0
	}
	p.rp.ServeHTTP(sw, out)
}

func tooLarge(limit int64) refusal {
	return refusal{status: http.StatusRequestEntityTooLarge, code: "RequestBodyTooLarge", diagnosis: diagnose.BodyTooLarge,
		message: fmt.Sprintf("The request body is larger than %d bytes.", limit),
		detail:  "kvproxy refuses bodies over KVPROXY_MAX_BODY_BYTES; Key Vault secrets are at most 25 KiB"}
}

// checkRequest enforces the request policy before anything is forwarded.
func (p *Proxy) checkRequest(r *http.Request) (refusal, bool) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
	default:
		return refusal{status: http.StatusMethodNotAllowed, code: "MethodNotAllowed", diagnosis: diagnose.MethodNotAllowed,
			message: "kvproxy forwards GET, HEAD, PUT, POST, PATCH and DELETE only.",
			detail:  r.Method + " is not a Key Vault operation; kvproxy is not a forward proxy"}, true
	}
	// Only origin-form targets ("/path?query"). An absolute-form target
	// (http://host/…) or a path starting with "//" is how a client would try
	// to point a proxy at another host; kvproxy never would, but refusing
	// says so clearly instead of silently sending it to the vault.
	if !strings.HasPrefix(r.RequestURI, "/") || strings.HasPrefix(r.RequestURI, "//") || r.URL.Host != "" {
		return refusal{status: http.StatusBadRequest, code: "InvalidRequestTarget", diagnosis: diagnose.InvalidRequestTarget,
			message: "The request target must be a path such as /secrets/name?api-version=7.5.",
			detail:  "kvproxy forwards only to its configured vault (" + p.vault + "); send the Key Vault path, not a URL"}, true
	}
	if p.o.RequireMetadata && !strings.EqualFold(r.Header.Get("Metadata"), "true") {
		return refusal{status: http.StatusBadRequest, code: "MetadataHeaderMissing", diagnosis: diagnose.MetadataHeaderMissing,
			message: "Required metadata header not specified.",
			detail:  "add the header 'Metadata: true' to requests to kvproxy (it proves the request was not forged through the app); KVPROXY_REQUIRE_METADATA_HEADER=false turns the check off"}, true
	}
	if p.o.ReadOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
		return refusal{status: http.StatusMethodNotAllowed, code: "ReadOnly", diagnosis: diagnose.ReadOnly,
			message: "kvproxy is read-only: only GET and HEAD are forwarded.",
			detail:  "KVPROXY_READ_ONLY=true refuses " + r.Method + "; unset it to allow writes"}, true
	}
	return refusal{}, false
}

// safeHost returns h if it is a plain host[:port] fit to put in a URL, else
// "" (then nextLink is left as the vault sent it).
func safeHost(h string) string {
	if h == "" || len(h) > 255 {
		return ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return ""
		}
	}
	return h
}

func hasAPIVersion(rawQuery string) bool {
	for q := rawQuery; q != ""; {
		var part string
		part, q, _ = strings.Cut(q, "&")
		if strings.HasPrefix(part, "api-version=") && len(part) > len("api-version=") {
			return true
		}
	}
	return false
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	ref, answer := classify(r, err)
	if st := stateOf(r.Context()); st != nil && !answer {
		st.status = ref.status
	}
	if !answer {
		return
	}
	if ok, suppressed := p.logs.allow(ref.diagnosis, time.Now()); ok {
		p.o.Logger.LogAttrs(r.Context(), slog.LevelWarn, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", ref.status), slog.String("diagnosis", ref.diagnosis), slog.String("detail", ref.detail),
			slog.Int("suppressed", suppressed))
	}
	p.refuse(w, ref)
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards flushes (the reverse proxy flushes streamed bodies).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
