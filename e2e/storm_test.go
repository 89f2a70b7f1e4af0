package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// caeChallenge is a continuous access evaluation challenge as Key Vault
// sends it when it wants a token with more claims (claims decode to
// {"access_token":{"nbf":{"essential":true,"value":"1726077595"}}}).
const caeChallenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzI2MDc3NTk1In19fQ=="`

// caeVault answers authenticated requests for /secrets/revoked with a CAE
// challenge, whatever the token, and passes everything else to the vault v.
func caeVault(v http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/secrets/revoked" || r.Header.Get("Authorization") == "" {
			v.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", caeChallenge)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"Unauthorized","message":"AKV10038: The token has been revoked or the principal's access changed."}}`)
	})
}

// TestUnauthorizedStorm: while the vault keeps answering 401 on one path,
// kvproxy must go on serving the other paths with the token it holds, stay
// ready, and not turn the 401s into a stream of token requests (the README:
// a burst cannot hammer the identity endpoint; IMDS allows 20 requests/s).
func TestUnauthorizedStorm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup starts kvproxy and returns it with a counter of the token
		// requests the identity side received.
		setup func(t *testing.T) (*proc, func() int)
		path  string
	}{
		{
			name: "401 with a cached managed identity token",
			setup: func(t *testing.T) (*proc, func() int) {
				f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{}) // 24h tokens: azidentity caches them
				return startKV(t, f, nil), f.IDs.Requests
			},
			path: "/secrets/" + azfake.SecretUnauthorizedExpired,
		},
		{
			name: "CAE challenges with workload identity",
			setup: func(t *testing.T) (*proc, func() int) {
				f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
				entra := azfaketest.StartEntra(t, f.TLS, azfake.EntraOptions{}) // 1h tokens: azidentity caches them
				tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
				if err := os.WriteFile(tokenFile, []byte("federated"), 0o600); err != nil {
					t.Fatal(err)
				}
				serveVaultWith(t, f, caeVault(f.Vault))
				return startKV(t, f, workloadEnv("workload-identity", entra.Authority, azfake.DefaultAppID, tokenFile)), entra.Requests
			},
			path: "/secrets/revoked",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, tokenRequests := tc.setup(t)
			p.waitReady(t, 20*time.Second)
			before := tokenRequests()

			const (
				stormWorkers   = 6
				healthyWorkers = 2
				duration       = 3 * time.Second
				maxRequests    = 10_000_000 // a safety cap only: the storm ends by time
			)
			var sent, storm401, stormOther, healthyOK, healthyBad, polls, notReady atomic.Int64
			var firstBad atomic.Value
			start := time.Now()
			stop := start.Add(duration)
			var wg sync.WaitGroup
			for i := range stormWorkers + healthyWorkers {
				healthy := i < healthyWorkers
				wg.Go(func() {
					for time.Now().Before(stop) && sent.Add(1) <= maxRequests {
						path := tc.path
						if healthy {
							path = "/secrets/db-password"
						}
						r, err := p.try(http.MethodGet, path, md(), nil)
						switch {
						case healthy && err == nil && r.Status == http.StatusOK:
							healthyOK.Add(1)
						case healthy:
							healthyBad.Add(1)
							firstBad.CompareAndSwap(nil, fmt.Sprintf("status %d error %v body %s", r.Status, err, r.Body))
						case err == nil && r.Status == http.StatusUnauthorized:
							storm401.Add(1)
						default:
							stormOther.Add(1)
						}
					}
				})
			}
			wg.Go(func() {
				for time.Now().Before(stop) {
					r, err := p.adminGet("/readyz")
					polls.Add(1)
					if err != nil || r.Status != http.StatusOK {
						notReady.Add(1)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
			wg.Wait()
			elapsed := time.Since(start)
			during := tokenRequests() - before
			mfs := p.metricsOf(t)
			success := metric(mfs, "kvproxy_token_acquisitions_total", map[string]string{"result": "success"})
			t.Logf("%v: %d 401s, %d healthy 200s, %d token requests, /readyz 503 on %d of %d polls, %v token acquisitions counted",
				elapsed.Round(time.Millisecond), storm401.Load(), healthyOK.Load(), during, notReady.Load(), polls.Load(), success)

			if storm401.Load() < 50 || healthyOK.Load() < 10 {
				t.Fatalf("the storm did not run: %d 401s, %d healthy answers", storm401.Load(), healthyOK.Load())
			}
			if n := stormOther.Load(); n > 0 {
				t.Errorf("%d storm requests got something else than the vault's 401", n)
			}
			if n := healthyBad.Load(); n > 0 {
				t.Errorf("%d requests for a readable secret failed during the storm; first: %v", n, firstBad.Load())
			}
			if n := notReady.Load(); n > 0 {
				t.Errorf("/readyz answered 503 on %d of %d polls while a valid token was held throughout (the 401s are for one path)", n, polls.Load())
			}
			if limit := int(elapsed/time.Second) + 2; during > limit {
				t.Errorf("%d 401s caused %d token requests in %v (about %.0f/s); want at most about one per second (%d)",
					storm401.Load(), during, elapsed.Round(time.Millisecond), float64(during)/elapsed.Seconds(), limit)
			}
			if success > float64(tokenRequests()) {
				t.Errorf("kvproxy_token_acquisitions_total{result=success} = %v, but the identity side received only %d token requests: the same token is counted as acquired again on every 401",
					success, tokenRequests())
			}
		})
	}
}
