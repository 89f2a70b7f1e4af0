package certfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ca issues server certificates for 127.0.0.1 in tests.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{cert: cert, key: key, pool: pool}
}

// issue returns a PEM certificate and key with the given serial.
type pair struct{ cert, key []byte }

func (c *ca) issue(t testing.TB, serial int64) pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "kvproxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"kvproxy.apps.svc"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pair{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
}

type files struct{ cert, key string }

func newFiles(t *testing.T) files {
	dir := t.TempDir()
	return files{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")}
}

func (f files) write(t testing.TB, p pair) {
	t.Helper()
	if err := os.WriteFile(f.cert, p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// serve runs a TLS listener on 127.0.0.1 with the source's config, and
// returns a function that handshakes and reports the serial served.
func serve(t *testing.T, s *Source, roots *x509.CertPool) func() int64 {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	return func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "kvproxy.apps.svc"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
}

func TestRotation(t *testing.T) {
	authority := newCA(t)
	f := newFiles(t)
	f.write(t, authority.issue(t, 100))
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	var reloads atomic.Int32
	var errs []error
	var mu sync.Mutex
	s, err := New(Options{CertFile: f.cert, KeyFile: f.key, Now: clk.now, CheckInterval: 5 * time.Second,
		OnReload: func(*tls.Certificate) { reloads.Add(1) },
		OnError:  func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.ServerConfig(); cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", cfg.MinVersion)
	}
	handshake := serve(t, s, authority.pool)
	if got := handshake(); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}

	// cert-manager rotates: the new pair is served once the interval passed.
	f.write(t, authority.issue(t, 101))
	if got := handshake(); got != 100 {
		t.Errorf("serial %d before the interval, want 100", got)
	}
	clk.advance(5 * time.Second)
	if got := handshake(); got != 101 {
		t.Errorf("serial %d after the interval, want 101", got)
	}

	// A key that does not match, or a half-written file, keeps the old pair.
	f.write(t, pair{authority.issue(t, 102).cert, authority.issue(t, 103).key})
	clk.advance(5 * time.Second)
	if got := handshake(); got != 101 {
		t.Errorf("serial %d with a mismatched pair, want 101", got)
	}
	clk.advance(5 * time.Second)
	handshake()
	if err := os.WriteFile(f.cert, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.advance(5 * time.Second)
	if got := handshake(); got != 101 {
		t.Errorf("serial %d with a broken file, want 101", got)
	}
	if err := os.Remove(f.key); err != nil {
		t.Fatal(err)
	}
	clk.advance(5 * time.Second)
	if got := handshake(); got != 101 {
		t.Errorf("serial %d with a missing key, want 101", got)
	}
	mu.Lock()
	if len(errs) != 3 {
		t.Errorf("errors %v; want the mismatch, the broken file and the missing key, once each", errs)
	}
	for _, err := range errs {
		if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("error quotes the key: %v", err)
		}
	}
	mu.Unlock()

	// Fixed: served at the next look; Reload looks at once.
	f.write(t, authority.issue(t, 104))
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload: %v %v", changed, err)
	}
	if got := handshake(); got != 104 {
		t.Errorf("serial %d after the fix, want 104", got)
	}
	if reloads.Load() != 2 {
		t.Errorf("%d reloads, want 2", reloads.Load())
	}
	if leaf := s.Certificate().Leaf; leaf == nil || leaf.SerialNumber.Int64() != 104 {
		t.Errorf("Certificate().Leaf %v", leaf)
	}
}

func TestNewRefuses(t *testing.T) {
	authority := newCA(t)
	f := newFiles(t)
	if _, err := New(Options{CertFile: f.cert}); err == nil {
		t.Error("no key file accepted")
	}
	if _, err := New(Options{CertFile: f.cert, KeyFile: f.key}); err == nil || !strings.Contains(err.Error(), "KVPROXY_TLS_CERT_FILE") {
		t.Errorf("missing files: %v", err)
	}
	f.write(t, pair{authority.issue(t, 1).cert, authority.issue(t, 2).key})
	if _, err := New(Options{CertFile: f.cert, KeyFile: f.key}); err == nil {
		t.Error("mismatched pair accepted")
	}
}

func BenchmarkGetCertificate(b *testing.B) {
	authority := newCA(b)
	dir := b.TempDir()
	f := files{filepath.Join(dir, "c"), filepath.Join(dir, "k")}
	f.write(b, authority.issue(b, 1))
	s, err := New(Options{CertFile: f.cert, KeyFile: f.key})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.GetCertificate(nil)
	}
}
