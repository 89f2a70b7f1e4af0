package azfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

// TLS is a throwaway CA and a leaf certificate for 127.0.0.1, ::1 and
// localhost (ECDSA P-256, valid from a day ago to a year ahead).
type TLS struct {
	// CAPEM is the CA certificate, PEM-encoded.
	CAPEM []byte
	// CertPool holds only the CA.
	CertPool *x509.CertPool
	// ServerConfig serves the leaf certificate (and the CA after it), with
	// MinVersion TLS 1.2. Servers should use a Clone of it.
	ServerConfig *tls.Config
}

// NewTLS generates a new CA and leaf certificate.
func NewTLS() (*TLS, error) {
	now := time.Now()
	notBefore, notAfter := now.Add(-24*time.Hour), now.AddDate(1, 0, 0)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("azfake: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "azfake test CA", Organization: []string{"kvproxy"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("azfake: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("azfake: CA certificate: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("azfake: leaf key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"kvproxy"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("azfake: leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("azfake: leaf certificate: %w", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &TLS{
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPool: pool,
		ServerConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{{
				Certificate: [][]byte{leafDER, caDER},
				PrivateKey:  leafKey,
				Leaf:        leaf,
			}},
		},
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails
	return n
}

// ClientTransport returns a new *http.Transport trusting only this CA. It is a
// clone of http.DefaultTransport's settings with proxies disabled: the fakes
// are always on the loopback interface.
func (t *TLS) ClientTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: t.CertPool, MinVersion: tls.VersionTLS12}
	return tr
}

// WriteCAFile writes CAPEM to path with mode 0644, for SSL_CERT_FILE in
// end-to-end tests.
func (t *TLS) WriteCAFile(path string) error {
	return os.WriteFile(path, t.CAPEM, 0o644)
}
