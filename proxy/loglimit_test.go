package proxy

import (
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(10 * time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, n := l.allow("a", t0); !ok || n != 0 {
		t.Fatalf("first line held back (%v, %d)", ok, n)
	}
	for i := range 5 {
		if ok, _ := l.allow("a", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatalf("line %d within the interval written", i+2)
		}
	}
	if ok, _ := l.allow("b", t0); !ok {
		t.Fatal("another code's first line held back")
	}
	if ok, n := l.allow("a", t0.Add(10*time.Second)); !ok || n != 5 {
		t.Fatalf("after the interval: (%v, %d), want a line reporting 5 suppressed", ok, n)
	}
}

// A client repeating a diagnosed request cannot flood the log, and the
// metric still counts every diagnosis.
func TestDiagnosedRequestsDoNotFloodTheLog(t *testing.T) {
	var logs azfaketest.SyncBuffer
	e := setup(t, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.DiagnosisLogInterval = time.Hour // no second line can be due within the test
	})
	const n = 300
	for range n {
		resp, _ := e.do(t, "GET", "/secrets/"+azfake.SecretForbiddenRBAC, nil)
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		resp, _ = e.do(t, "GET", "/secrets/x", nil, "Metadata", "")
		if resp.StatusCode != 400 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	out := logs.String()
	if got := strings.Count(out, `"msg":"vault refused the request"`); got != 1 {
		t.Errorf("%d WARN lines for %d identical 403s, want 1 within the interval", got, n)
	}
	if got := testutil.ToFloat64(e.metrics.Diagnoses.WithLabelValues(diagnose.ForbiddenByRBAC)); got != n {
		t.Errorf("kvproxy_diagnoses_total{forbidden-by-rbac} = %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(e.metrics.Diagnoses.WithLabelValues(diagnose.MetadataHeaderMissing)); got != n {
		t.Errorf("kvproxy_diagnoses_total{metadata-header-missing} = %v, want %d", got, n)
	}
}

// Failures of the forwarding path (the vault unreachable) are rate-limited
// the same way.
func TestForwardingFailuresDoNotFloodTheLog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var logs azfaketest.SyncBuffer
	e := setup(t, func(o *Options) {
		o.Vault = &url.URL{Scheme: "https", Host: addr}
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.DiagnosisLogInterval = time.Hour
	})
	const n = 50
	for range n {
		if resp, _ := e.do(t, "GET", "/secrets/db-password", nil); resp.StatusCode != 502 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if got := strings.Count(logs.String(), `"msg":"request failed"`); got != 1 {
		t.Errorf("%d WARN lines for %d identical failures, want 1 within the interval", got, n)
	}
	if got := testutil.ToFloat64(e.metrics.Diagnoses.WithLabelValues(diagnose.UpstreamUnavailable)); got != n {
		t.Errorf("kvproxy_diagnoses_total{upstream-unavailable} = %v, want %d", got, n)
	}
}
