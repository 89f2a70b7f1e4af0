package azfake

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTLS(t *testing.T) {
	tl := newTLS(t)

	leaf := tl.ServerConfig.Certificates[0].Leaf
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("leaf not valid for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tl.CertPool, CurrentTime: time.Now().Add(-23 * time.Hour)}); err != nil {
		t.Errorf("leaf not valid 23h ago: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tl.CertPool, CurrentTime: time.Now().AddDate(0, 11, 0)}); err != nil {
		t.Errorf("leaf not valid in 11 months: %v", err)
	}
	if tl.ServerConfig.MinVersion != 0x0303 {
		t.Errorf("MinVersion = %#x, want TLS 1.2", tl.ServerConfig.MinVersion)
	}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = tl.ServerConfig.Clone()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the distrusting client's handshake fails on purpose
	srv.StartTLS()
	defer srv.Close()

	tr := tl.ClientTransport()
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	res.Body.Close()

	other := newTLS(t).ClientTransport()
	defer other.CloseIdleConnections()
	if res, err := (&http.Client{Transport: other}).Get(srv.URL); err == nil {
		res.Body.Close()
		t.Error("a client trusting another CA connected")
	}

	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := tl.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("CA file is not a PEM certificate: %q", b)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("CA file: %v (IsCA %v)", err, ca != nil && ca.IsCA)
	}
}
