package proxy

import (
	"bytes"
	"cmp"
	"errors"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/accesspolicy"
	"github.com/kvproxy/kvproxy/clientauth"
	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// requestState travels with one request.
type requestState struct {
	token     string // the token last sent, for diagnostics; never logged
	requestID string // x-ms-request-id of the vault's answer
	// challenge is the parsed WWW-Authenticate of the last 401 the vault
	// answered, parsed once for renewal, learning and diagnosis.
	challenge kvwire.Challenge
	// ctx ends at the request's deadline (KVPROXY_UPSTREAM_TIMEOUT).
	ctx *deadlineCtx
	// subject is the client's verified identity (with client auth).
	subject string
	// cache is the secret cache's outcome (hit, miss, …), "" when unused.
	cache string
	// retries counts the times the vault was sent the request again for a
	// 429 or 503 (KVPROXY_RETRY_MAX); firstStatus is the vault's first
	// answer then.
	retries, firstStatus int
}

// serve applies the request policy, then forwards to the vault.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx, checkHost bool) {
	start := time.Now()
	m := p.o.Metrics
	m.RequestStarted()
	st := requestState{ctx: newDeadlineCtx(start.Add(p.o.UpstreamTimeout))}
	defer st.ctx.stop()
	defer p.budget.release(&ctx.Request.Header)
	defer func() {
		status := ctx.Response.StatusCode()
		d := time.Since(start)
		m.RequestDone()
		m.ObserveRequest(methodLabel(ctx.Method()), status, d.Seconds())
		if p.o.Logger.Enabled(ctx, slog.LevelDebug) {
			if st.requestID == "" {
				st.requestID = string(ctx.Response.Header.Peek("x-ms-request-id"))
			}
			path, _, _ := bytes.Cut(ctx.Request.Header.RequestURI(), []byte("?"))
			p.o.Logger.LogAttrs(ctx, slog.LevelDebug, "request",
				slog.String("method", string(ctx.Method())), slog.String("path", string(path)),
				slog.Int("status", status), slog.Duration("duration", d),
				slog.String("vaultRequestId", st.requestID), slog.String("cache", cmp.Or(st.cache, "-")))
		}
		if p.o.OnRequest != nil {
			p.record(ctx, &st, start, status, d)
		}
	}()
	if p.budget.refused(&ctx.Request.Header) { // a body of a byte or a first chunk got past the size cut
		ctx.SetConnectionClose()
		p.refuse(ctx, overloaded(metrics.LimitBufferedBytes))
		return
	}
	if ref, bad := p.checkRequest(ctx, checkHost); bad {
		p.refuse(ctx, ref)
		return
	}
	if ref, bad := p.checkClient(ctx, &st); bad {
		p.refuse(ctx, ref)
		if ref.status == fasthttp.StatusUnauthorized {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="kvproxy", error="invalid_token"`)
		}
		return
	}
	p.forward(ctx, &st)
}

// checkClient verifies the client's token and asks the policy, when client
// authentication is on.
func (p *Proxy) checkClient(ctx *fasthttp.RequestCtx, st *requestState) (refusal, bool) {
	if p.o.ClientAuth == nil {
		return refusal{}, false
	}
	raw := clientauth.BearerToken(string(ctx.Request.Header.Peek("Authorization")))
	id, err := p.o.ClientAuth.Verify(st.ctx, raw)
	if err != nil {
		p.o.Metrics.CountClient(metrics.ClientUnauthenticated)
		reason := clientauth.ReasonOf(err)
		detail := "the client token was refused (" + string(reason) + ")"
		var ce *clientauth.Error
		if errors.As(err, &ce) && ce.Detail != "" {
			detail = ce.Detail
		}
		detail = kvwire.RedactToken(detail, raw)
		status := fasthttp.StatusUnauthorized
		if reason == clientauth.ReasonIssuerUnreachable {
			status = fasthttp.StatusServiceUnavailable // kvproxy cannot check, not the client's fault
		}
		return refusal{status: status, code: "ClientUnauthenticated", diagnosis: diagnose.ClientUnauthenticated,
			message: "kvproxy requires a valid Kubernetes ServiceAccount token (Authorization: Bearer) with audience " + p.o.ClientAuth.Audience() + ".",
			detail:  detail + "; send the pod's projected service-account token with that audience (a serviceAccountToken volume)"}, true
	}
	st.subject = id.Subject
	var pol *accesspolicy.Policy
	if p.o.Policy != nil {
		pol = p.o.Policy()
	}
	path, _, _ := cutQuery(ctx.Request.Header.RequestURI())
	if d := pol.Allow(id.Subject, string(ctx.Method()), string(path)); !d.Allowed {
		p.o.Metrics.CountClient(metrics.ClientDenied)
		return refusal{status: fasthttp.StatusForbidden, code: "ClientNotAllowed", diagnosis: diagnose.ClientNotAllowed,
			message: "kvproxy's access policy does not allow this request.", detail: d.Message()}, true
	}
	p.o.Metrics.CountClient(metrics.ClientAllowed)
	return refusal{}, false
}

// record hands the audit record of a finished request to OnRequest.
func (p *Proxy) record(ctx *fasthttp.RequestCtx, st *requestState, start time.Time, status int, d time.Duration) {
	client := st.subject
	if client == "" {
		client = ctx.RemoteAddr().String()
	}
	path, _, _ := cutQuery(ctx.Request.Header.RequestURI())
	if st.requestID == "" {
		st.requestID = string(ctx.Response.Header.Peek("x-ms-request-id"))
	}
	p.o.OnRequest(RequestRecord{
		Time: start, Client: client, Method: methodLabel(ctx.Method()), Path: string(path), Status: status,
		Diagnosis: string(ctx.Response.Header.Peek(HeaderDiagnosis)), Cache: string(ctx.Response.Header.Peek("X-Cache")),
		VaultRequestID: st.requestID, Duration: d,
	})
}

// checkRequest enforces the request policy before anything is forwarded.
func (p *Proxy) checkRequest(ctx *fasthttp.RequestCtx, checkHost bool) (refusal, bool) {
	h := &ctx.Request.Header
	if hasBothFramings(h.RawHeaders()) {
		ctx.SetConnectionClose() // nothing after this body may be read as a request
		return refusal{status: fasthttp.StatusBadRequest, code: "BadRequest", diagnosis: diagnose.MalformedRequest,
			message: "The request carries both Content-Length and Transfer-Encoding.",
			detail:  "a request with two framings is a request smuggling attempt; send one of them"}, true
	}
	switch methodLabel(h.Method()) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPut, fasthttp.MethodPost, fasthttp.MethodPatch, fasthttp.MethodDelete:
	default:
		return refusal{status: fasthttp.StatusMethodNotAllowed, code: "MethodNotAllowed", diagnosis: diagnose.MethodNotAllowed,
			message: "kvproxy forwards GET, HEAD, PUT, POST, PATCH and DELETE only.",
			detail:  sanitizeMethod(h.Method()) + " is not a Key Vault operation; kvproxy is not a forward proxy"}, true
	}
	// Only origin-form targets ("/path?query"). An absolute-form target
	// (http://host/…) or a path starting with "//" is how a client would
	// try to point a proxy at another host; kvproxy never would, but
	// refusing says so clearly instead of silently sending it to the vault.
	if uri := h.RequestURI(); len(uri) == 0 || uri[0] != '/' || bytes.HasPrefix(uri, []byte("//")) {
		return refusal{status: fasthttp.StatusBadRequest, code: "InvalidRequestTarget", diagnosis: diagnose.InvalidRequestTarget,
			message: "The request target must be a path such as /secrets/name?api-version=7.5.",
			detail:  "kvproxy forwards only to its configured vault (" + p.vault + "); send the Key Vault path, not a URL"}, true
	}
	if checkHost && !p.hostAllowed(h.Host()) {
		return refusal{status: fasthttp.StatusMisdirectedRequest, code: "HostNotAllowed", diagnosis: diagnose.HostNotAllowed,
			message: "The Host header names no host kvproxy serves.",
			detail:  "kvproxy answers Host values that are an IP address, localhost, or listed in KVPROXY_ALLOWED_HOSTS (this guards against DNS rebinding); add the name there"}, true
	}
	if p.o.RequireMetadata && !bytes.EqualFold(h.Peek("Metadata"), []byte("true")) {
		return refusal{status: fasthttp.StatusBadRequest, code: "MetadataHeaderMissing", diagnosis: diagnose.MetadataHeaderMissing,
			message: "Required metadata header not specified.",
			detail:  "add the header 'Metadata: true' to requests to kvproxy (it proves the request was not forged through the app); KVPROXY_REQUIRE_METADATA_HEADER=false turns the check off"}, true
	}
	if p.o.ReadOnly && !h.IsGet() && !h.IsHead() {
		return refusal{status: fasthttp.StatusMethodNotAllowed, code: "ReadOnly", diagnosis: diagnose.ReadOnly,
			message: "kvproxy is read-only: only GET and HEAD are forwarded.",
			detail:  "KVPROXY_READ_ONLY=true refuses " + methodLabel(h.Method()) + "; unset it to allow writes"}, true
	}
	return refusal{}, false
}

// sanitizeMethod names a method for a detail: letters only, at most 20.
func sanitizeMethod(m []byte) string {
	out := make([]byte, 0, min(len(m), 20))
	for _, c := range m {
		if len(out) == 20 {
			break
		}
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "this method"
	}
	return string(out)
}

// headersToVault is everything of the client's request that reaches the
// vault besides method, path, query and body: what Key Vault and its SDKs
// use. Authorization and Content-Length are kvproxy's own; Host is the
// vault's. Nothing else a client sends rides along (Upgrade, HTTP2-Settings,
// X-HTTP-Method-Override, X-Original-URL, Via, Proxy-Authorization,
// Forwarded, trailers, …).
var headersToVault = []string{
	"Content-Type", "Accept", "Accept-Language", "User-Agent",
	"x-ms-client-request-id", "x-ms-return-client-request-id", "traceparent", "tracestate",
}

// buildRequest makes the request to the vault from what Key Vault uses of
// the client's: method, the target byte for byte (api-version appended
// when absent), the allowlisted headers and the body.
func (p *Proxy) buildRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	in := &ctx.Request.Header
	req.Header.DisableNormalizing()
	req.Header.SetMethodBytes(in.Method())
	uri := in.RequestURI()
	_, query, hasQuery := bytes.Cut(uri, []byte("?"))
	var arr [256]byte // SetRequestURIBytes copies: most targets need no allocation
	buf := append(arr[:0], uri...)
	if !hasAPIVersion(query) {
		if hasQuery && len(query) > 0 {
			buf = append(buf, '&')
		} else if !hasQuery {
			buf = append(buf, '?')
		}
		buf = append(buf, p.apiVer...)
	}
	req.SetRequestURIBytes(buf)
	u := req.URI()
	u.DisablePathNormalizing = true
	u.SetScheme(p.scheme)
	u.SetHost(p.vaultHdr)
	req.Header.SetHost(p.vaultHdr)
	for k, v := range in.All() {
		if name := vaultHeader(k); name != "" {
			req.Header.SetBytesV(name, v)
		}
	}
	if body := ctx.Request.Body(); len(body) > 0 || !in.IsGet() && !in.IsHead() {
		req.SetBodyRaw(body)
	}
}

// hasAPIVersion reports whether a raw query has a non-empty api-version.
func hasAPIVersion(rawQuery []byte) bool {
	for q := rawQuery; len(q) > 0; {
		var part []byte
		part, q, _ = bytes.Cut(q, []byte("&"))
		if v, ok := bytes.CutPrefix(part, []byte("api-version=")); ok && len(v) > 0 {
			return true
		}
	}
	return false
}

// vaultHeader returns the allowlisted name of a client header (one of
// headersToVault), or "".
func vaultHeader(k []byte) string {
	for _, name := range headersToVault {
		if len(k) == len(name) && bytes.EqualFold(k, []byte(name)) {
			return name
		}
	}
	return ""
}
