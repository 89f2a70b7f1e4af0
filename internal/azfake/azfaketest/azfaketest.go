// Package azfaketest starts the fakes of package azfake for one test, with
// their controls, and stops them when the test ends. It also holds the
// polling helper and the log buffer the tests of kvproxy share. It is for tests only; nothing
// in the product imports it.
package azfaketest

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// NewTLS returns a fresh CA and server certificate for 127.0.0.1.
func NewTLS(t testing.TB) *azfake.TLS {
	t.Helper()
	tl, err := azfake.NewTLS()
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// Vault is a started vault with its controls.
type Vault struct {
	*azfake.Vault
	Faults *azfake.VaultFaults
	URL    string // https://127.0.0.1:PORT
}

// StartVault serves a vault over TLS with tl on 127.0.0.1 until the test
// ends. o.Faults is created when nil.
func StartVault(t testing.TB, tl *azfake.TLS, o azfake.VaultOptions) *Vault {
	t.Helper()
	if o.Faults == nil {
		o.Faults = new(azfake.VaultFaults)
	}
	v := azfake.NewVault(o)
	u, err := v.Start(tl, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return &Vault{Vault: v, Faults: o.Faults, URL: u}
}

// Identity is a started managed identity endpoint with its controls.
type Identity struct {
	*azfake.IdentityServer
	Faults *azfake.IdentityFaults
	URL    string // http://127.0.0.1:PORT/msi/token, for IDENTITY_ENDPOINT
}

// StartIdentity serves a managed identity endpoint on 127.0.0.1 until the
// test ends. o.Faults is created when nil.
func StartIdentity(t testing.TB, o azfake.IdentityOptions) *Identity {
	t.Helper()
	if o.Faults == nil {
		o.Faults = new(azfake.IdentityFaults)
	}
	s := azfake.NewIdentityServer(o)
	u, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &Identity{IdentityServer: s, Faults: o.Faults, URL: u}
}

// Entra is a started Entra ID stand-in.
type Entra struct {
	*azfake.Entra
	Authority string // https://127.0.0.1:PORT/, for AZURE_AUTHORITY_HOST
}

// StartEntra serves the Entra ID stand-in over TLS with tl on 127.0.0.1
// until the test ends.
func StartEntra(t testing.TB, tl *azfake.TLS, o azfake.EntraOptions) *Entra {
	t.Helper()
	e := azfake.NewEntra(o)
	authority, err := e.Start(tl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return &Entra{Entra: e, Authority: authority}
}

// Eventually polls cond every 10ms until it holds, and fails the test when d
// passes first, naming what it waited for and cond's last report.
func Eventually(t testing.TB, d time.Duration, what string, cond func() (ok bool, last string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", d, what, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// log sink for servers a test runs, or a subprocess's output.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
