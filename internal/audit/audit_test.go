package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A JWT-shaped token and an opaque, long one.
const (
	jwtToken    = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwczp3ZWIifQ.c2lnbmF0dXJlc2lnbmF0dXJl"
	opaqueToken = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if n := bytes.Count(b, []byte("\n")); n != 1 {
		t.Fatalf("%d lines, want one:\n%s", n, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	return m
}

func TestRecord(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	NewJSON(&buf).Log(context.Background(), Record{
		Time: at, Client: "system:serviceaccount:apps:web", Method: "GET",
		Path: "/secrets/db-password/0123?api-version=7.5", Status: 200, Cache: "miss",
		VaultRequestID: "6f1c2a3b-0000-4000-8000-000000000001", Duration: 12345 * time.Microsecond,
	})
	m := decode(t, buf.Bytes())
	want := map[string]any{
		"time": "2026-05-01T12:00:00Z", "level": "INFO", "msg": "audit",
		"client": "system:serviceaccount:apps:web", "method": "GET", "path": "/secrets/db-password/0123",
		"status": 200.0, "diagnosis": "", "cache": "miss",
		"vaultRequestId": "6f1c2a3b-0000-4000-8000-000000000001", "durationMs": 12.345,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("line has keys %v, want exactly %v", m, want)
	}
}

// TestHostileInput: strings a client controls cannot smuggle a token, a
// query secret or a second line into the audit log.
func TestHostileInput(t *testing.T) {
	tests := []struct {
		name string
		r    Record
	}{
		{"token as the path", Record{Path: "/secrets/" + jwtToken}},
		{"token in the query", Record{Path: "/secrets/x?sig=" + opaqueToken + "&token=" + jwtToken}},
		{"token after a fragment", Record{Path: "/secrets/x#" + jwtToken}},
		{"opaque token in the path", Record{Path: "/secrets/" + opaqueToken}},
		{"token as the client", Record{Client: jwtToken}},
		{"token as the method", Record{Method: jwtToken}},
		{"line injection in the method", Record{Method: "GET\n{\"msg\":\"audit\",\"client\":\"admin\"}"}},
		{"line injection in the path", Record{Path: "/secrets/x\n{\"msg\":\"audit\"}\r\n"}},
		{"token as the cache result", Record{Cache: opaqueToken}},
		{"token as the request id", Record{VaultRequestID: jwtToken}},
		{"token as the diagnosis", Record{Diagnosis: jwtToken}},
		{"token cut at the bound", Record{Path: "/secrets/" + strings.Repeat("a", maxPath-40) + jwtToken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			NewJSON(&buf).Log(context.Background(), tt.r)
			line := buf.String()
			m := decode(t, buf.Bytes())
			if m["msg"] != "audit" || m["client"] == "admin" {
				t.Errorf("line altered: %s", line)
			}
			for _, secret := range []string{jwtToken, opaqueToken, "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0", "c2lnbmF0dXJlc2lnbmF0dXJl", opaqueToken[:40]} {
				if strings.Contains(line, secret) {
					t.Errorf("line carries a token: %s", line)
				}
			}
			if strings.Contains(line, "sig=") || strings.Contains(line, "token=") {
				t.Errorf("line carries the query: %s", line)
			}
			if p, _ := m["path"].(string); len(p) > maxPath+len("…") {
				t.Errorf("path of %d bytes", len(p))
			}
		})
	}
}

func TestHandlerAndNil(t *testing.T) {
	var l *Logger
	l.Log(context.Background(), Record{Path: "/x"}) // no panic, no output
	var buf bytes.Buffer
	New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})).Log(context.Background(), Record{Path: "/x"})
	if buf.Len() == 0 {
		t.Error("an audit line was filtered by the handler's level: audit lines must not depend on KVPROXY_LOG_LEVEL")
	}
}

func FuzzLog(f *testing.F) {
	f.Add("system:serviceaccount:a:b", "GET", "/secrets/x?y="+jwtToken, "", "miss", "id-1")
	f.Fuzz(func(t *testing.T, client, method, path, diag, cache, id string) {
		var buf bytes.Buffer
		NewJSON(&buf).Log(context.Background(), Record{Client: client, Method: method, Path: path, Diagnosis: diag, Cache: cache, VaultRequestID: id})
		m := decode(t, buf.Bytes())
		if m["msg"] != "audit" {
			t.Fatalf("msg %v", m["msg"])
		}
		if p, _ := m["path"].(string); strings.ContainsAny(p, "?#") && !strings.ContainsAny(path, "?#") {
			t.Fatalf("path %q", p)
		}
	})
}
