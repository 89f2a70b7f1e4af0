// Package audit writes kvproxy's audit log: one JSON line per proxied
// request, `"msg":"audit"`, saying who asked for what and what came of it
// (KVPROXY_AUDIT_LOG).
//
// A [Record] holds only the fields an audit line may carry: no header, no
// body, no query, no token. Every string is cut to a bound and run through
// [kvwire.Redact] before it is written, and the path loses its query, so
// even a record built from a client's hostile input cannot carry a
// credential or a secret value into the log.
package audit

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Message is the msg of every audit line.
const Message = "audit"

// Bounds of the strings of a line.
const (
	maxClient    = 256
	maxPath      = 1024
	maxDiagnosis = 64
	maxShort     = 16 // method, cache result
	maxRequestID = 64
)

// Record is one proxied request.
type Record struct {
	// Time the request arrived.
	Time time.Time
	// Client: the verified subject (system:serviceaccount:<ns>:<name>)
	// with client authentication, else the remote address.
	Client string
	// Method and Path of the request; the path is written without its
	// query or fragment.
	Method, Path string
	// Status sent to the client.
	Status int
	// Diagnosis is the X-Kvproxy-Diagnosis code sent, "" for none.
	Diagnosis string
	// Cache is the cache's result (hit, miss, stale, bypass), "" when the
	// request was not cacheable or the cache is off.
	Cache string
	// VaultRequestID is the vault's x-ms-request-id, "" when the request
	// did not reach the vault.
	VaultRequestID string
	// Duration from arrival to the end of the response.
	Duration time.Duration
}

// Logger writes audit lines. A nil *Logger writes nothing, so callers need
// no check when the audit log is off.
type Logger struct {
	l *slog.Logger
}

// New writes audit lines through h (give it a JSON handler: the line is
// then one JSON object). Handler options such as ReplaceAttr apply.
func New(h slog.Handler) *Logger { return &Logger{l: slog.New(h)} }

// NewJSON writes audit lines as JSON to w (kvproxy: stderr).
func NewJSON(w io.Writer) *Logger { return New(slog.NewJSONHandler(w, nil)) }

// Log writes r as one line, at level INFO with r.Time as its time.
func (a *Logger) Log(ctx context.Context, r Record) {
	if a == nil {
		return
	}
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	rec := slog.NewRecord(t, slog.LevelInfo, Message, 0)
	rec.AddAttrs(
		slog.String("client", clean(r.Client, maxClient)),
		slog.String("method", word(r.Method)),
		slog.String("path", clean(stripQuery(r.Path), maxPath)),
		slog.Int("status", r.Status),
		slog.String("diagnosis", clean(r.Diagnosis, maxDiagnosis)),
		slog.String("cache", word(r.Cache)),
		slog.String("vaultRequestId", requestID(r.VaultRequestID)),
		slog.Float64("durationMs", float64(r.Duration.Microseconds())/1000),
	)
	_ = a.l.Handler().Handle(ctx, rec)
}

func stripQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// clean redacts what could be a token, then cuts s to max bytes (on a
// rune boundary), then redacts again: the first pass sees whole tokens, so
// a cut cannot leave a fragment too short to be recognised.
func clean(s string, max int) string {
	s = kvwire.Redact(s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return kvwire.Redact(s)
}

// word keeps a method or cache result that is a short word of letters
// and hyphens; anything else becomes "other".
func word(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > maxShort {
		return "other"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-') {
			return "other"
		}
	}
	return s
}

// requestID keeps a request id of letters, digits and hyphens (the vault's
// are GUIDs); anything else is dropped.
func requestID(s string) string {
	if len(s) > maxRequestID {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-') {
			return ""
		}
	}
	return s
}
