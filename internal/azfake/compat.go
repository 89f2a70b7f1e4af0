package azfake

import "time"

// The controls below remain on the fakes only because the tests of auth/
// and proxy/ call them; new code uses [VaultFaults] and [IdentityFaults]
// through the options. Delete this file once those tests do.

// FailNext is [VaultFaults.FailNext] on the vault's Faults.
func (v *Vault) FailNext(status, n int, retryAfter string) {
	v.o.Faults.FailNext(status, n, retryAfter)
}

// SetLatency is [VaultFaults.SetLatency] on the vault's Faults.
func (v *Vault) SetLatency(d time.Duration) { v.o.Faults.SetLatency(d) }

// Hold is [IdentityFaults.Hold] on the endpoint's Faults.
func (s *IdentityServer) Hold() (release func()) { return s.o.Faults.Hold() }

// Waiting is [IdentityFaults.Waiting] on the endpoint's Faults.
func (s *IdentityServer) Waiting() int { return s.o.Faults.Waiting() }
