package azfake

import (
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// VaultFaults are a test's controls over a [Vault]: latency and injected
// failures. They are kept apart from the Vault so the playground's vault
// (`kvproxy dev`) has none; a test creates one and passes it as
// [VaultOptions].Faults. The zero value injects nothing. It is safe for
// concurrent use.
type VaultFaults struct {
	mu      sync.Mutex
	latency time.Duration
	fail    struct {
		n, status  int
		retryAfter string
	}
}

// FailNext makes the next n requests, whatever their path, answer status:
// 429 with a Throttled body, 503 with ServiceUnavailable, 500 with
// InternalServerError, any other status with a body named after it. The
// answers carry Retry-After: retryAfter when it is not "". n <= 0 cancels.
func (f *VaultFaults) FailNext(status, n int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail.n, f.fail.status, f.fail.retryAfter = max(n, 0), status, retryAfter
}

// SetLatency makes every request wait d, or until its context is done, before
// it is answered. Zero turns latency off.
func (f *VaultFaults) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// intercept applies the faults to a request the vault has recorded; it
// reports whether it answered (or dropped) the request.
func (f *VaultFaults) intercept(w http.ResponseWriter, r *http.Request) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	latency := f.latency
	f.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true // the client is gone: nobody reads an answer
		}
	}
	f.mu.Lock()
	failing := f.fail.n > 0
	status, retryAfter := f.fail.status, f.fail.retryAfter
	if failing {
		f.fail.n--
	}
	f.mu.Unlock()
	if !failing {
		return false
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeInjectedFailure(w, status)
	return true
}

// IdentityFaults are a test's controls over an [IdentityServer]: an outage
// and holding token requests. They are kept apart from the IdentityServer so
// the playground's endpoint has none; a test creates one and passes it as
// [IdentityOptions].Faults. The zero value injects nothing. It is safe for
// concurrent use.
type IdentityFaults struct {
	mu      sync.Mutex
	down    bool
	waiting int
	gate    chan struct{} // non-nil while held; closed on release
}

// SetDown makes the endpoint answer every token request with App Service's
// 500 while down is true.
func (f *IdentityFaults) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Hold makes token requests block, before they are otherwise handled, until
// release is called or their context ends; [IdentityFaults.Waiting] counts
// them. Calling release more than once is harmless.
func (f *IdentityFaults) Hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gate == nil {
		f.gate = make(chan struct{})
	}
	gate := f.gate
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.gate == gate {
				f.gate = nil
			}
			close(gate)
		})
	}
}

// Waiting returns the number of token requests currently blocked by Hold.
func (f *IdentityFaults) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

// intercept applies the faults to a counted token request; it reports
// whether it answered (or dropped) the request.
func (f *IdentityFaults) intercept(w http.ResponseWriter, r *http.Request) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	gate := f.gate
	if gate != nil {
		f.waiting++
	}
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
		if r.Context().Err() != nil {
			return true
		}
	}
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		// Wording as captured from App Service (its typo included).
		writeJSON(w, http.StatusInternalServerError, msiError{500, "An unexpected error occured while fetching the AAD Token.", uuid.NewString()})
		return true
	}
	return false
}
