package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/kvwire"
)

// HeaderDiagnosis carries kvproxy's diagnosis code on responses it explains.
const HeaderDiagnosis = "X-Kvproxy-Diagnosis"

// errorBody is the JSON kvproxy answers with. "error" has Key Vault's own
// shape, so SDKs surface code and message; "kvproxy" adds the diagnosis.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Kvproxy struct {
		Diagnosis string `json:"diagnosis"`
		Detail    string `json:"detail"`
	} `json:"kvproxy"`
}

// refusal is an answer kvproxy gives without (or instead of) the vault's.
type refusal struct {
	status    int
	code      string // error.code
	diagnosis string
	message   string // error.message: what happened
	detail    string // kvproxy.detail: what to do
}

// body is r's JSON error body.
func (r refusal) body() []byte {
	var b errorBody
	b.Error.Code, b.Error.Message = r.code, r.message
	b.Kvproxy.Diagnosis, b.Kvproxy.Detail = r.diagnosis, r.detail
	body, _ := json.Marshal(b) // strings only: cannot fail
	return body
}

// refuse answers r, replacing whatever the response held.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, r refusal) {
	body := r.body()
	resp := &ctx.Response
	closeAfter := resp.ConnectionClose()
	resp.Reset()
	if closeAfter {
		resp.SetConnectionClose()
	}
	resp.SetStatusCode(r.status)
	resp.Header.SetContentType("application/json; charset=utf-8")
	resp.Header.Set("Cache-Control", "no-store")
	resp.Header.Set(HeaderDiagnosis, r.diagnosis)
	if r.status == fasthttp.StatusServiceUnavailable {
		resp.Header.Set("Retry-After", "1")
	}
	resp.SetBody(body)
	p.countDiagnosis(r.diagnosis)
}

func (p *Proxy) countDiagnosis(code string) { p.o.Metrics.CountDiagnosis(code) }

// tokenFailure marks an error of the TokenSource: no token could be had.
type tokenFailure struct{ err error }

func (e tokenFailure) Error() string { return e.err.Error() }
func (e tokenFailure) Unwrap() error { return e.err }

// fail answers a failure of the forwarding path (classify decides how) and
// logs it, rate-limited per diagnosis code.
func (p *Proxy) fail(ctx *fasthttp.RequestCtx, st *requestState, err error) {
	ref := classify(err)
	if ok, suppressed := p.logs.allow(ref.diagnosis, time.Now()); ok {
		path, _, _ := cutQuery(ctx.Request.Header.RequestURI())
		p.o.Logger.LogAttrs(ctx, slog.LevelWarn, "request failed",
			slog.String("method", string(ctx.Method())), slog.String("path", string(path)),
			slog.Int("status", ref.status), slog.String("diagnosis", ref.diagnosis), slog.String("detail", ref.detail),
			slog.Int("suppressed", suppressed))
	}
	p.refuse(ctx, ref)
}

// classify is the one place that maps a failure of the forwarding path to a
// response: token failures → 503, timeouts → 504, anything else → 502.
func classify(err error) refusal {
	var tf tokenFailure
	if errors.As(err, &tf) {
		return refusal{status: fasthttp.StatusServiceUnavailable, code: "TokenUnavailable", diagnosis: diagnose.TokenUnavailable,
			message: "kvproxy holds no valid access token for the vault.", detail: kvwire.Redact(tf.Error())}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return refusal{status: fasthttp.StatusGatewayTimeout, code: "UpstreamTimeout", diagnosis: diagnose.UpstreamUnavailable,
			message: "The vault did not answer within KVPROXY_UPSTREAM_TIMEOUT.",
			detail:  "the vault did not answer in time (" + summarize(err) + "); check its health and the network path, or raise KVPROXY_UPSTREAM_TIMEOUT"}
	}
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		return refusal{status: fasthttp.StatusBadGateway, code: "UpstreamAnswerTooLarge", diagnosis: diagnose.UpstreamUnavailable,
			message: "The vault's answer is larger than kvproxy accepts.",
			detail:  fmt.Sprintf("the vault's answer exceeded %d bytes; no Key Vault answer is that large, so something between kvproxy and the vault answered", maxResponseBody)}
	}
	if brokeAfterSending(err) {
		return refusal{status: fasthttp.StatusBadGateway, code: "UpstreamUnavailable", diagnosis: diagnose.UpstreamUnavailable,
			message: "The connection to the vault broke before its whole answer arrived.",
			detail: "the connection broke while kvproxy read the vault's answer (" + summarize(err) +
				"); the vault may have carried the request out: read the item before sending a write again"}
	}
	return refusal{status: fasthttp.StatusBadGateway, code: "UpstreamUnavailable", diagnosis: diagnose.UpstreamUnavailable,
		message: "kvproxy could not reach the vault.",
		detail:  "the vault could not be reached (" + summarize(err) + "); check DNS, the firewall or private endpoint, and the trusted CA bundle"}
}

// brokeAfterSending reports a failure reading the vault's answer: the
// request was sent (connecting and the TLS handshake happen before, in
// dialTLS), so the vault may have acted on it.
func brokeAfterSending(err error) bool {
	var oe *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.As(err, &oe) && oe.Op == "read"
}

// summarize shortens a transport error for a client-facing detail.
// Transport errors carry addresses and causes, never request headers or
// tokens.
func summarize(err error) string {
	s := kvwire.Redact(err.Error())
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func cutQuery(uri []byte) (path, query []byte, ok bool) {
	for i, c := range uri {
		if c == '?' {
			return uri[:i], uri[i+1:], true
		}
	}
	return uri, nil, false
}

func tooLarge(limit int64) refusal {
	return refusal{status: fasthttp.StatusRequestEntityTooLarge, code: "RequestBodyTooLarge", diagnosis: diagnose.BodyTooLarge,
		message: fmt.Sprintf("The request body is larger than %d bytes.", limit),
		detail:  "kvproxy refuses bodies over KVPROXY_MAX_BODY_BYTES; Key Vault secrets are at most 25 KiB"}
}
