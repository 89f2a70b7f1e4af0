package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"
)

// TransportOptions tune the upstream transport.
type TransportOptions struct {
	// RootCAs to trust; nil uses the system roots (SSL_CERT_FILE and
	// SSL_CERT_DIR are honoured).
	RootCAs *x509.CertPool
	// ResponseHeaderTimeout bounds the wait for the vault's headers.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost sizes the keep-alive pool (default 512).
	MaxIdleConnsPerHost int
}

// NewTransport returns the transport kvproxy uses toward the vault: TLS 1.2
// or later, a keep-alive pool sized for hundreds of concurrent requests
// (net/http's default of 2 idle connections per host would force a new TLS
// handshake for most requests under load), and timeouts on every phase.
// It never modifies http.DefaultTransport. HTTPS_PROXY is honoured; the
// token still travels inside the TLS tunnel to the vault.
func NewTransport(o TransportOptions) *http.Transport {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 512
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           2 * o.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  o.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 1 << 20,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    o.RootCAs,
		},
	}
}
