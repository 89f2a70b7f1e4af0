package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/kvwire"
)

// maxDiagnosedBody bounds how much of a 401/403 body kvproxy reads to
// explain it. Key Vault's error bodies are a few hundred bytes.
const maxDiagnosedBody = 1 << 20

// modifyResponse attaches a diagnosis to 401 and 403 answers: the header
// X-Kvproxy-Diagnosis, a "kvproxy" member beside the vault's "error" when
// the body is a JSON object, a WARN log line and a metric.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return p.rewriteNextLink(resp)
	}
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		return nil
	}
	st := stateOf(resp.Request.Context())
	if st == nil {
		st = &requestState{}
	}
	if resp.StatusCode == http.StatusUnauthorized && p.o.OnChallenge != nil && st.challenge != (kvwire.Challenge{}) {
		p.o.OnChallenge(st.challenge)
	}
	body, complete := readBody(resp, maxDiagnosedBody)
	in := diagnose.Input{
		Status: resp.StatusCode, Body: body, Challenge: st.challenge,
		NetworkInfo: resp.Header.Get("x-ms-keyvault-network-info"), RequestID: resp.Header.Get("x-ms-request-id"),
		Method: resp.Request.Method, Path: resp.Request.URL.Path,
		Vault: p.vault, Scope: p.o.Scope, Now: time.Now(),
	}
	if st.token != "" {
		in.Token, _ = kvwire.ParseClaims(st.token) // claims only: a token that is not a JWT names no identity
	}
	d := diagnose.Diagnose(in)
	if d != nil && complete {
		if enriched, ok := diagnose.EnrichBody(body, d); ok {
			body = enriched
		}
	}
	if complete {
		replaceBody(resp, body)
	}
	if d == nil {
		return nil
	}
	resp.Header.Set(HeaderDiagnosis, d.Code)
	p.countDiagnosis(d.Code)
	ok, suppressed := p.logs.allow(d.Code, time.Now())
	if !ok {
		return nil
	}
	attrs := []slog.Attr{
		slog.String("diagnosis", d.Code), slog.String("detail", d.Detail),
		slog.Int("status", resp.StatusCode), slog.String("method", in.Method), slog.String("path", in.Path),
		slog.String("vault", d.Vault), slog.String("requestId", d.RequestID),
		slog.String("tid", d.Identity.TenantID), slog.String("oid", d.Identity.ObjectID), slog.String("appid", d.Identity.AppID),
	}
	if d.VaultCode != "" {
		attrs = append(attrs, slog.String("vaultCode", d.VaultCode))
	}
	if d.Fix != "" {
		attrs = append(attrs, slog.String("fix", d.Fix))
	}
	attrs = append(attrs, slog.Int("suppressed", suppressed))
	p.o.Logger.LogAttrs(resp.Request.Context(), slog.LevelWarn, "vault refused the request", attrs...)
	return nil
}

// maxListBody bounds the list bodies whose nextLink is rewritten; Key Vault
// pages hold at most 25 items.
const maxListBody = 4 << 20

// rewriteNextLink points a list page's nextLink back at kvproxy, so a client
// that follows it stays on the proxy (the vault's own URL would answer 401
// to a client without a token). Only the vault's own origin is rewritten.
func (p *Proxy) rewriteNextLink(resp *http.Response) error {
	st := stateOf(resp.Request.Context())
	if st == nil || st.inboundHost == "" || resp.Request.Method != http.MethodGet ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		resp.ContentLength > maxListBody || resp.Header.Get("Content-Encoding") != "" {
		return nil
	}
	body, complete := readBody(resp, maxListBody)
	if !complete {
		return nil
	}
	if bytes.Contains(body, []byte(`"nextLink"`)) {
		body = p.nextLinkRE.ReplaceAll(body, []byte(`${1}http://`+st.inboundHost+`/`))
	}
	replaceBody(resp, body)
	return nil
}

// readBody reads resp's body if it is at most limit bytes. Otherwise (or if
// reading fails) it reports false and leaves the body to stream on as the
// vault sent it, with the bytes already read put back in front.
func readBody(resp *http.Response, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return body, false
	}
	return body, true
}

// replaceBody makes body resp's body (the old one was read whole by
// readBody) and corrects Content-Length.
func replaceBody(resp *http.Response, body []byte) {
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
}
