package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestClassify(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name   string
		err    error
		status int
		detail string // a part of the detail
	}{
		{"a token failure", tokenFailure{errors.New("the credential failed")}, 503, "the credential failed"},
		{"the dial timed out", fasthttp.ErrDialTimeout, 504, "did not answer in time"},
		{"the TLS handshake timed out", fasthttp.ErrTLSHandshakeTimeout, 504, "did not answer in time"},
		{"the answer timed out", fasthttp.ErrTimeout, 504, "did not answer in time"},
		{"connection refused", refused, 502, "could not be reached"},
		{"a reset while reading the answer", reset, 502, "may have carried the request out"},
		{"a wrapped reset", fmt.Errorf("doing: %w", reset), 502, "may have carried the request out"},
		{"the answer cut short", io.ErrUnexpectedEOF, 502, "may have carried the request out"},
		{"closed before the first byte", fasthttp.ErrConnectionClosed, 502, "may have carried the request out"},
		{"an answer too large", fasthttp.ErrBodyTooLarge, 502, "exceeded"},
		{"a certificate error", errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), 502, "could not be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := classify(tt.err)
			if r.status != tt.status || !strings.Contains(r.detail, tt.detail) {
				t.Errorf("status %d detail %q, want %d and %q", r.status, r.detail, tt.status, tt.detail)
			}
		})
	}
}

func TestClassifyDialErrors(t *testing.T) {
	// A reset during the TLS handshake happened before anything was sent.
	handshakeReset := dialError{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	if r := classify(handshakeReset); r.status != 502 || !strings.Contains(r.detail, "could not be reached") {
		t.Errorf("a reset during the handshake: %d %q", r.status, r.detail)
	}
	timedOut := dialError{&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}}
	if r := classify(timedOut); r.status != 504 {
		t.Errorf("a connect that timed out: %d %q", r.status, r.detail)
	}
}
