package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/kvwire"
)

// isHopHeader reports the vault's response headers that describe its
// connection to kvproxy, not the answer (Connection, Keep-Alive, Proxy-*,
// TE, Trailer, Upgrade), and kvproxy's own diagnosis header: none reaches
// the client as the vault sent it.
func isHopHeader(k []byte) bool {
	switch len(k) {
	case 2:
		return bytes.EqualFold(k, []byte("TE"))
	case 7:
		return bytes.EqualFold(k, []byte("Trailer")) || bytes.EqualFold(k, []byte("Upgrade"))
	case 10:
		return bytes.EqualFold(k, []byte("Connection")) || bytes.EqualFold(k, []byte("Keep-Alive"))
	case 16:
		return bytes.EqualFold(k, []byte("Proxy-Connection"))
	case 18:
		return bytes.EqualFold(k, []byte("Proxy-Authenticate"))
	case len(HeaderDiagnosis):
		return bytes.EqualFold(k, []byte(HeaderDiagnosis))
	}
	return false
}

// respond finishes the vault's answer, already in ctx.Response: hop-by-hop
// headers go, a list's nextLink points back at kvproxy, and a 401 or 403
// gets its diagnosis.
func (p *Proxy) respond(ctx *fasthttp.RequestCtx, st *requestState) {
	resp := &ctx.Response
	status := resp.StatusCode()
	if status < 200 {
		// A 1xx final answer (101 Switching Protocols among them) would
		// make a tunnel past every policy check: never.
		resp.Reset()
		p.fail(ctx, st, errors.New("the vault answered with an informational status"))
		return
	}
	// One pass over the vault's headers; most answers hold none to drop.
	var buf [4]string
	drop := buf[:0] // grows (allocating) only for an odd answer
	for k := range resp.Header.All() {
		if isHopHeader(k) {
			drop = append(drop, string(k))
		}
	}
	for _, k := range drop {
		resp.Header.Del(k)
	}
	resp.Header.ResetConnectionClose()
	switch status {
	case fasthttp.StatusOK:
		if ctx.IsGet() && isListPath(ctx.Request.Header.RequestURI()) {
			p.rewriteNextLink(ctx)
		}
	case fasthttp.StatusUnauthorized, fasthttp.StatusForbidden, fasthttp.StatusTooManyRequests,
		fasthttp.StatusInternalServerError, fasthttp.StatusBadGateway, fasthttp.StatusServiceUnavailable, fasthttp.StatusGatewayTimeout:
		p.diagnose(ctx, st)
	}
}

// diagnose attaches a diagnosis to a 401 or 403, or a 429 or 5xx passed on
// after the retries: the X-Kvproxy-Diagnosis
// header, a "kvproxy" member beside the vault's "error" when the body is a
// JSON object, a WARN line (rate-limited) and a metric. The exact token
// sent is redacted from everything, whatever its shape.
func (p *Proxy) diagnose(ctx *fasthttp.RequestCtx, st *requestState) {
	resp := &ctx.Response
	status := resp.StatusCode()
	st.requestID = string(resp.Header.Peek("x-ms-request-id"))
	if status == fasthttp.StatusUnauthorized && p.o.OnChallenge != nil && st.challenge != (kvwire.Challenge{}) {
		p.o.OnChallenge(st.challenge)
	}
	body := resp.Body()
	if len(st.token) >= 8 && bytes.Contains(body, []byte(st.token)) {
		body = bytes.ReplaceAll(body, []byte(st.token), []byte(kvwire.Redacted))
	}
	path, _, _ := bytes.Cut(ctx.Request.Header.RequestURI(), []byte("?"))
	in := diagnose.Input{
		Status: status, Body: body, Challenge: st.challenge,
		NetworkInfo: string(resp.Header.Peek("x-ms-keyvault-network-info")), RequestID: st.requestID,
		Method: string(ctx.Method()), Path: string(path),
		Vault: p.vault, Scope: p.o.Scope, Now: time.Now(), Retries: st.retries, FirstStatus: st.firstStatus,
	}
	if st.token != "" {
		in.Token, _ = kvwire.ParseClaims(st.token) // claims only: a token that is not a JWT names no identity
	}
	d := diagnose.Diagnose(in)
	if d == nil {
		return
	}
	d.Detail = kvwire.RedactToken(d.Detail, st.token)
	d.Fix = kvwire.RedactToken(d.Fix, st.token)
	if enriched, ok := diagnose.EnrichBody(body, d); ok {
		body = enriched
	}
	resp.SetBody(body)
	resp.Header.Set(HeaderDiagnosis, d.Code)
	p.countDiagnosis(d.Code)
	ok, suppressed := p.logs.allow(d.Code, time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.String("diagnosis", d.Code), slog.String("detail", d.Detail),
		slog.Int("status", status), slog.String("method", in.Method), slog.String("path", in.Path),
		slog.String("vault", d.Vault), slog.String("requestId", d.RequestID),
		slog.String("tid", d.Identity.TenantID), slog.String("oid", d.Identity.ObjectID), slog.String("appid", d.Identity.AppID),
		slog.Int("suppressed", suppressed),
	}
	if d.VaultCode != "" {
		attrs = append(attrs, slog.String("vaultCode", d.VaultCode))
	}
	if d.Fix != "" {
		attrs = append(attrs, slog.String("fix", d.Fix))
	}
	msg := "vault refused the request"
	if status != fasthttp.StatusUnauthorized && status != fasthttp.StatusForbidden {
		msg = "vault failed the request"
	}
	p.o.Logger.LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
}

// isListPath reports a Key Vault list operation: a collection (/secrets,
// /deletedkeys, /certificates/issuers) or an item's versions
// (/secrets/{name}/versions). Only their answers carry a nextLink; the body
// of a single item is never searched for one.
func isListPath(uri []byte) bool {
	path, _, _ := bytes.Cut(uri, []byte("?"))
	path = bytes.Trim(path, "/")
	if len(path) == 0 {
		return false
	}
	segs := bytes.Split(path, []byte("/"))
	switch len(segs) {
	case 1:
		return true
	case 2:
		return bytes.EqualFold(segs[0], []byte("certificates")) && bytes.EqualFold(segs[1], []byte("issuers"))
	case 3:
		return bytes.EqualFold(segs[2], []byte("versions"))
	}
	return false
}

// rewriteNextLink points a list page's top-level nextLink back at kvproxy,
// so a client that follows it stays on the proxy (the vault's own URL would
// answer 401 to a client without a token). Only the top-level member is
// touched, only when it names the vault's own origin; every other member
// keeps its bytes.
func (p *Proxy) rewriteNextLink(ctx *fasthttp.RequestCtx) {
	body := ctx.Response.Body()
	host := safeHost(ctx.Request.Header.Host())
	if host == "" || !bytes.Contains(body, []byte(`"nextLink"`)) ||
		!bytes.HasPrefix(ctx.Response.Header.ContentType(), []byte("application/json")) || len(ctx.Response.Header.ContentEncoding()) > 0 {
		return
	}
	out, ok := replaceTopLevel(body, "nextLink", func(raw json.RawMessage) (json.RawMessage, bool) {
		var link string
		if json.Unmarshal(raw, &link) != nil {
			return nil, false
		}
		for _, o := range p.origin {
			if len(link) >= len(o) && strings.EqualFold(link[:len(o)], o) {
				return jsonString("http://" + host + "/" + link[len(o):]), true
			}
		}
		return nil, false
	})
	if ok {
		ctx.Response.SetBody(out)
	}
}

// replaceTopLevel returns body with the value of its first top-level
// member key replaced by what fn makes of it, and true; every other member
// keeps its key and value bytes. It reports false when body is not a JSON
// object, has no such member, or fn declines.
func replaceTopLevel(body []byte, key string, fn func(json.RawMessage) (json.RawMessage, bool)) ([]byte, bool) {
	members, ok := kvwire.ObjectMembers(body)
	if !ok {
		return nil, false
	}
	for i, m := range members {
		if m.Key == key {
			v, ok := fn(m.Value)
			if !ok {
				return nil, false
			}
			members[i].Value = v
			return kvwire.AppendObject(make([]byte, 0, len(body)+32), members), true
		}
	}
	return nil, false
}

// safeHost returns h if it is a plain host[:port] fit to put in a URL, else
// "" (then nextLink is left as the vault sent it).
func safeHost(h []byte) string {
	if len(h) == 0 || len(h) > 255 {
		return ""
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return ""
		}
	}
	return string(h)
}

// jsonString encodes s as a JSON string without HTML escaping, so a link's
// & stays as the vault wrote it (json.Marshal would write \u0026).
func jsonString(s string) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) //nolint:errcheck // a string always encodes
	return bytes.TrimRight(b.Bytes(), "\n")
}
