package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/diagnose"
)

// akv10046 is the vault's answer when it cannot resolve the token's signing
// key (Azure-Samples/azuresandbox#188, the JWT header only).
const akv10046 = `{"error":{"code":"Unauthorized","message":"AKV10046: Unable to resolve the key used for signature validation. EncodedJwtHeader: 'eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6IkhTMjNiN0RvN1RjYVUxUm9MSHdwSXEyNFZZZyJ9'."}}`

// scripted answers the n-th request (from 0) with answer(n), counts them
// and records the Authorization each carried.
func scripted(calls *atomic.Int32, tokens *[]string, mu *sync.Mutex, answer func(n int32) (int, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		mu.Lock()
		*tokens = append(*tokens, r.Header.Get("Authorization"))
		mu.Unlock()
		status, body := answer(calls.Add(1) - 1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, body) //nolint:errcheck
	}
}

func TestTransient401IsRetriedOnceAfterAPause(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		answer    func(n int32) (int, string)
		status    int
		requests  int32
		diagnosis string
		renewable bool    // the credential has another token
		counted   float64 // retries{unauthorized}
	}{
		{name: "GET succeeds the second time", method: "GET",
			answer: func(n int32) (int, string) {
				if n == 0 {
					return 401, akv10046
				}
				return 200, `{"value":"v"}`
			}, status: 200, requests: 2},
		{name: "persistent AKV10046 is diagnosed", method: "GET",
			answer: func(int32) (int, string) { return 401, akv10046 },
			status: 401, requests: 2, diagnosis: diagnose.TokenRejected},
		{name: "POST is not resent after a pause", method: "POST",
			answer: func(int32) (int, string) { return 401, akv10046 },
			status: 401, requests: 1, diagnosis: diagnose.TokenRejected},
		{name: "another 401 is not paused for", method: "GET",
			answer: func(int32) (int, string) {
				return 401, `{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}`
			},
			status: 401, requests: 1, diagnosis: diagnose.AudienceMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			var tokens []string
			var mu sync.Mutex
			u, pool := hostileVault(t, scripted(&calls, &tokens, &mu, tt.answer))
			e := setup(t, func(o *Options) { o.Vault, o.RootCAs = u, pool })
			if tt.renewable {
				e.tokens.next = goodToken() + "x"
			}
			start := time.Now()
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"value":"x"}`)
			}
			resp, b := e.do(t, tt.method, "/keys/k/create", body)
			if resp.StatusCode != tt.status || resp.Header.Get(HeaderDiagnosis) != tt.diagnosis {
				t.Fatalf("status %d diagnosis %q, want %d %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), tt.status, tt.diagnosis, b)
			}
			if n := calls.Load(); n != tt.requests {
				t.Errorf("%d requests reached the vault, want %d", n, tt.requests)
			}
			if tt.requests == 2 && time.Since(start) < transientPause {
				t.Errorf("resent after %v, want a pause of at least %v", time.Since(start), transientPause)
			}
			if len(tokens) == 2 && (tokens[0] == tokens[1]) == tt.renewable {
				t.Errorf("renewable %v, yet the resend carried the same token: %v", tt.renewable, tokens[0] == tokens[1])
			}
			if tt.diagnosis == diagnose.TokenRejected && !strings.Contains(string(b), `"message":"AKV10046`) {
				t.Errorf("the vault's body did not pass through: %s", b)
			}
			want := map[string]float64{retryUnauthorized: tt.counted}
			for _, r := range []string{retryUnauthorized, retryThrottled, retryUnavailable} {
				if got := testutil.ToFloat64(e.metrics.UpstreamRetries.WithLabelValues(r)); got != want[r] {
					t.Errorf("retries{%s} = %v, want %v (a resend with the same token is not counted)", r, got, want[r])
				}
			}
		})
	}
}

func TestTransient401ReadsABoundedPrefix(t *testing.T) {
	long := `{"error":{"code":"Unauthorized","message":"` + strings.Repeat("x", 4*maxTransientPeek) + ` AKV10046"}}`
	if transient401([]byte(long)) {
		t.Error("AKV10046 found beyond the bounded prefix")
	}
	if !transient401([]byte(akv10046)) {
		t.Error("AKV10046 not recognised")
	}
	if transient401(nil) {
		t.Error("an empty body")
	}
}
