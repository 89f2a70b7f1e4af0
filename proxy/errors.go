package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"

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

func (p *Proxy) refuse(w http.ResponseWriter, r refusal) {
	var b errorBody
	b.Error.Code, b.Error.Message = r.code, r.message
	b.Kvproxy.Diagnosis, b.Kvproxy.Detail = r.diagnosis, r.detail
	body, _ := json.Marshal(b)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderDiagnosis, r.diagnosis)
	if r.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(r.status)
	w.Write(body) //nolint:errcheck // the client may be gone; nothing to do
	p.countDiagnosis(r.diagnosis)
}

func (p *Proxy) countDiagnosis(code string) { p.o.Metrics.CountDiagnosis(code) }

// tokenFailure marks an error of the TokenSource: no token could be had.
type tokenFailure struct{ err error }

func (e tokenFailure) Error() string { return e.err.Error() }
func (e tokenFailure) Unwrap() error { return e.err }

// statusClientClosed is recorded (never sent) when the client went away.
const statusClientClosed = 499

// classify is the one place that maps a failure of the forwarding path to a
// response: token failures → 503, timeouts → 504, client gone → no answer,
// anything else → 502.
func classify(r *http.Request, err error) (refusal, bool) {
	var tf tokenFailure
	if errors.As(err, &tf) {
		return refusal{status: http.StatusServiceUnavailable, code: "TokenUnavailable", diagnosis: diagnose.TokenUnavailable,
			message: "kvproxy holds no valid access token for the vault.", detail: kvwire.Redact(tf.Error())}, true
	}
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		return refusal{status: statusClientClosed}, false
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return refusal{status: http.StatusGatewayTimeout, code: "UpstreamTimeout", diagnosis: diagnose.UpstreamUnavailable,
			message: "The vault did not answer within KVPROXY_UPSTREAM_TIMEOUT.",
			detail:  "the vault did not answer in time (" + summarize(err) + "); check its health and the network path, or raise KVPROXY_UPSTREAM_TIMEOUT"}, true
	}
	return refusal{status: http.StatusBadGateway, code: "UpstreamUnavailable", diagnosis: diagnose.UpstreamUnavailable,
		message: "kvproxy could not reach the vault.",
		detail:  "the vault could not be reached (" + summarize(err) + "); check DNS, the firewall or private endpoint, and the trusted CA bundle"}, true
}

// summarize shortens a transport error for a client-facing detail. Transport
// errors carry addresses and causes, never request headers or tokens.
func summarize(err error) string {
	var ue interface{ Unwrap() error }
	s := err.Error()
	// url.Error prefixes "Get \"https://…\": "; the URL holds the client's
	// path and query, which are not ours to echo in a shared log.
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			s = inner.Error()
		}
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
