package azfake

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A reset answer: the vault did the work, the client got half an answer
// and an error; the next request is answered whole.
func TestVaultResetNext(t *testing.T) {
	faults := new(VaultFaults)
	v, u, c := startVault(t, VaultOptions{Faults: faults})
	faults.ResetNext(1)

	req, _ := http.NewRequest(http.MethodPut, u+"/secrets/cut?api-version=7.5", strings.NewReader(`{"value":"v1"}`))
	req.Header.Set("Authorization", "Bearer "+vaultToken())
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("the cut-off answer was read whole")
	}
	if got := len(v.Requests()); got != 1 {
		t.Errorf("recorded %d requests, want 1", got)
	}

	r := do(t, c, http.MethodGet, u+"/secrets/cut?api-version=7.5", vaultToken(), "")
	var b secretBundle
	r.decode(t, &b)
	if r.status != 200 || b.Value != "v1" {
		t.Errorf("after the reset: %d %s; the PUT was not carried out", r.status, r.body)
	}

	faults.ResetNext(3)
	faults.ResetNext(0)
	if r := do(t, c, http.MethodGet, u+"/secrets/cut?api-version=7.5", vaultToken(), ""); r.status != 200 {
		t.Errorf("after cancel: %d", r.status)
	}
}

// A slow body: the head arrives at once, the body waits for its bytes,
// and turning the fault off lets the rest out at once.
func TestVaultSlowBody(t *testing.T) {
	faults := new(VaultFaults)
	_, u, c := startVault(t, VaultOptions{Faults: faults})
	faults.SetSlowBody(time.Hour)

	req, _ := http.NewRequest(http.MethodGet, u+"/secrets/db-password?api-version=7.5", nil)
	req.Header.Set("Authorization", "Bearer "+vaultToken())
	res, err := c.Do(req) // returns with the head and the first byte
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.ContentLength <= 1 {
		t.Fatalf("head: %d, Content-Length %d", res.StatusCode, res.ContentLength)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(res.Body, first); err != nil || first[0] != '{' {
		t.Fatalf("first byte %q: %v", first, err)
	}
	faults.SetSlowBody(0)
	rest, err := io.ReadAll(res.Body)
	if err != nil || int64(1+len(rest)) != res.ContentLength || !strings.Contains(string(rest), "correct-horse-battery-staple") {
		t.Errorf("rest of the body: %q, %v", rest, err)
	}
}

// The black hole holds new handshakes until it is lifted; connections
// already open keep working.
func TestVaultBlackHole(t *testing.T) {
	faults := new(VaultFaults)
	tl := newTLS(t)
	v := NewVault(VaultOptions{Now: fixedNow, Faults: faults})
	u, err := v.Start(tl, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	t.Cleanup(func() { faults.SetBlackHole(false) }) // runs before Close
	url := u + "/secrets/db-password?api-version=7.5"
	open := &http.Client{Transport: tl.ClientTransport()}
	t.Cleanup(open.CloseIdleConnections)
	if r := do(t, open, http.MethodGet, url, vaultToken(), ""); r.status != 200 {
		t.Fatalf("before: %d", r.status)
	}

	faults.SetBlackHole(true)
	if r := do(t, open, http.MethodGet, url, vaultToken(), ""); r.status != 200 {
		t.Errorf("over the connection already open: %d", r.status)
	}

	fresh := &http.Client{Transport: tl.ClientTransport()}
	t.Cleanup(fresh.CloseIdleConnections)
	done := make(chan int, 1)
	go func() { done <- do(t, fresh, http.MethodGet, url, vaultToken(), "").status }()
	waitFor(t, "the new connection's handshake to be held", func() bool { return faults.HeldHandshakes() == 1 })
	select {
	case st := <-done:
		t.Fatalf("answered %d through the black hole", st)
	default:
	}
	faults.SetBlackHole(false)
	if st := <-done; st != 200 {
		t.Errorf("after the black hole: %d", st)
	}
	waitFor(t, "no handshake to be held", func() bool { return faults.HeldHandshakes() == 0 })
}

func TestIdentityFaults(t *testing.T) {
	faults := new(IdentityFaults)
	s, endpoint := startIdentity(t, IdentityOptions{Faults: faults})
	q := query("api-version", "2019-08-01", "resource", "https://vault.azure.net")
	get := func() response { return identityGet(t, context.Background(), endpoint, q, "kvproxy-dev-header") }

	faults.FailNext(http.StatusTooManyRequests, 2, "3")
	for i := range 2 {
		r := get()
		var e msiError
		r.decode(t, &e)
		if r.status != 429 || r.header.Get("Retry-After") != "3" || e.StatusCode != 429 || e.Message == "" {
			t.Errorf("failure %d: %d Retry-After %q %s", i, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
	if r := get(); r.status != 200 {
		t.Errorf("after the failures: %d %s", r.status, r.body)
	}

	faults.SetRawAnswer(200, "text/html", "<html>upstream error</html>")
	if r := get(); r.status != 200 || r.header.Get("Content-Type") != "text/html" || string(r.body) != "<html>upstream error</html>" {
		t.Errorf("raw answer: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	faults.SetRawAnswer(0, "", "")

	const d = 30 * time.Millisecond
	faults.SetLatency(d)
	start := time.Now()
	if r := get(); r.status != 200 || time.Since(start) < d {
		t.Errorf("with latency %v: %d after %v", d, r.status, time.Since(start))
	}
	faults.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if res, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			res.Body.Close()
		}
		t.Fatalf("Do = %v, want deadline exceeded", err)
	}
	faults.SetLatency(0)
	if r := get(); r.status != 200 {
		t.Errorf("latency off: %d", r.status)
	}
	if s.Issued() != 3 || s.Requests() != 7 {
		t.Errorf("Issued %d Requests %d, want 3 and 7", s.Issued(), s.Requests())
	}
}
