// Package certfile serves a TLS certificate from a certificate file and a
// key file (KVPROXY_TLS_CERT_FILE and KVPROXY_TLS_KEY_FILE), re-read when
// they change, as cert-manager and the kubelet rotate them.
//
// The files are looked at during a TLS handshake, at most once per
// [Options.CheckInterval]: one handshake reads both files, and a changed
// pair takes effect for the handshakes after it. A pair that does not load
// (a half-written file, a key that does not match the certificate) is
// reported and the previous pair keeps being served; the next look tries
// again. No goroutine runs in the background.
package certfile

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often the files are looked at, at most.
const DefaultCheckInterval = 10 * time.Second

// maxFileBytes bounds a certificate or key file.
const maxFileBytes = 1 << 20

// Options configure a [Source]. CertFile and KeyFile are required.
type Options struct {
	CertFile, KeyFile string
	// CheckInterval: the files are read at most once per interval, by a
	// handshake (default [DefaultCheckInterval]).
	CheckInterval time.Duration
	// Now is the clock for the interval (default time.Now).
	Now func() time.Time
	// OnReload is called when a changed pair took effect.
	OnReload func(*tls.Certificate)
	// OnError is called when a changed pair does not load; the previous
	// pair stays in use. It is called once per distinct content.
	OnError func(error)
}

// Source holds the certificate served. It is safe for concurrent use.
type Source struct {
	o   Options
	cur atomic.Pointer[tls.Certificate]

	next   atomic.Int64 // UnixNano of the next look
	mu     sync.Mutex   // one look at a time
	seen   [sha256.Size]byte
	failed bool
}

// New loads the pair and returns a Source serving it; a pair that does not
// load is an error.
func New(o Options) (*Source, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("certfile: both KVPROXY_TLS_CERT_FILE and KVPROXY_TLS_KEY_FILE are needed")
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Source{o: o}
	cert, sum, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(cert)
	s.seen = sum
	s.next.Store(o.Now().Add(o.CheckInterval).UnixNano())
	return s, nil
}

// ServerConfig returns a TLS configuration serving the Source's
// certificate, TLS 1.2 at least.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
	}
}

// GetCertificate is a [tls.Config.GetCertificate]: it returns the current
// certificate, looking at the files first when the interval has passed.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.o.Now().UnixNano() >= s.next.Load() && s.mu.TryLock() {
		// Handshakes arriving meanwhile are served the current pair.
		s.next.Store(s.o.Now().Add(s.o.CheckInterval).UnixNano())
		s.check()
		s.mu.Unlock()
	}
	return s.cur.Load(), nil
}

// Certificate returns the certificate being served (its Leaf is parsed),
// e.g. to report its expiry.
func (s *Source) Certificate() *tls.Certificate { return s.cur.Load() }

// Reload looks at the files now, whatever the interval, and reports
// whether a new pair took effect and why a changed pair did not load.
func (s *Source) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next.Store(s.o.Now().Add(s.o.CheckInterval).UnixNano())
	return s.check()
}

// check reads the pair; s.mu is held.
func (s *Source) check() (bool, error) {
	cert, sum, err := s.load()
	if sum == s.seen && (err == nil || s.failed) {
		return false, nil // unchanged, or the same bad content reported before
	}
	s.seen = sum
	if err != nil {
		s.failed = true
		if s.o.OnError != nil {
			s.o.OnError(err)
		}
		return false, err
	}
	s.failed = false
	s.cur.Store(cert)
	if s.o.OnReload != nil {
		s.o.OnReload(cert)
	}
	return true, nil
}

// load reads both files and parses the pair; sum identifies what was read
// (zero when a file could not be read).
func (s *Source) load() (*tls.Certificate, [sha256.Size]byte, error) {
	var zero [sha256.Size]byte
	certPEM, err := readFile(s.o.CertFile)
	if err != nil {
		return nil, zero, fmt.Errorf("certfile: KVPROXY_TLS_CERT_FILE: %w", err)
	}
	keyPEM, err := readFile(s.o.KeyFile)
	if err != nil {
		return nil, zero, fmt.Errorf("certfile: KVPROXY_TLS_KEY_FILE: %w", err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// tls's errors name no key material.
		return nil, sum, fmt.Errorf("certfile: %s and %s: %w", s.o.CertFile, s.o.KeyFile, err)
	}
	return &cert, sum, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxFileBytes)
	}
	return b, nil
}
