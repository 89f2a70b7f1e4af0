package azfaketest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// The helpers start working fakes whose controls are the ones the fakes
// consult.
func TestStartedFakesAndTheirControls(t *testing.T) {
	tl := NewTLS(t)
	v := StartVault(t, tl, azfake.VaultOptions{})
	v.Faults.FailNext(http.StatusServiceUnavailable, 1, "")
	c := &http.Client{Transport: tl.ClientTransport()}
	t.Cleanup(c.CloseIdleConnections)
	res, err := c.Get(v.URL + "/secrets/db-password?api-version=7.5")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || len(v.Requests()) != 1 {
		t.Errorf("vault with one failure injected: status %d, %d requests recorded", res.StatusCode, len(v.Requests()))
	}

	ids := StartIdentity(t, azfake.IdentityOptions{})
	release := ids.Faults.Hold()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ids.URL, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	Eventually(t, 5*time.Second, "the token request to be held", func() (bool, string) {
		return ids.Faults.Waiting() == 1, fmt.Sprint("waiting ", ids.Faults.Waiting())
	})
	release()
	<-done
	if ids.Requests() != 1 {
		t.Errorf("identity endpoint: %d requests, want 1", ids.Requests())
	}

	e := StartEntra(t, tl, azfake.EntraOptions{})
	if e.Authority == "" || e.Requests() != 0 {
		t.Errorf("Entra at %q with %d requests", e.Authority, e.Requests())
	}
}
