package app

import (
	"io"
	"log/slog"
	"strings"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kvwire"
)

// newLogger returns the process logger. As a last line of defence it
// redacts attributes named like credentials and, with kvwire.Redact, any
// value shaped like a token; kvproxy's own code never logs either.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	lvl, err := config.ParseLogLevel(level)
	if err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: replaceAttr}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// replaceAttr writes durations as Go duration strings ("5m0s": slog's JSON
// handler would write nanoseconds), then redacts.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return redactAttr(groups, a)
}

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch k := strings.ToLower(a.Key); {
	case k == "authorization", k == "token", k == "access_token", k == "accesstoken", k == "value",
		strings.Contains(k, "secret"), strings.Contains(k, "password"):
		return slog.String(a.Key, "[REDACTED]")
	}
	if a.Value.Kind() == slog.KindString {
		s := a.Value.String()
		if r := kvwire.Redact(s); r != s {
			return slog.String(a.Key, r)
		}
	}
	return a
}
