package azfake

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func startIdentity(t *testing.T, o IdentityOptions) (*IdentityServer, string) {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	s := NewIdentityServer(o)
	endpoint, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") || !strings.HasSuffix(endpoint, "/msi/token") {
		t.Fatalf("endpoint = %q", endpoint)
	}
	return s, endpoint
}

// identityGet sends a token request with the given query and header.
func identityGet(t *testing.T, ctx context.Context, endpoint string, q url.Values, header string) response {
	t.Helper()
	h := http.Header{}
	if header != "" {
		h.Set("X-IDENTITY-HEADER", header)
	}
	return tokenRequest(t, ctx, http.MethodGet, endpoint, q, h)
}

// tokenRequest sends a request with the given query and headers to a
// managed identity endpoint.
func tokenRequest(t *testing.T, ctx context.Context, method, endpoint string, q url.Values, h http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func query(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

func TestIdentityServerProtocol(t *testing.T) {
	const uamiRes = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua"
	s, endpoint := startIdentity(t, IdentityOptions{
		UserAssigned: map[string]Identity{
			"client-ua": {ObjectID: "object-ua", ResourceID: uamiRes},
		},
	})
	ok := func(kv ...string) url.Values {
		return query(append([]string{"api-version", "2019-08-01", "resource", "https://vault.azure.net"}, kv...)...)
	}
	tests := []struct {
		name       string
		q          url.Values
		header     string
		wantStatus int
		wantMsg    string // for errors
		wantOID    string // for successes
		wantAppID  string
		wantMIRID  string
	}{
		{name: "system assigned", q: ok(), header: "kvproxy-dev-header", wantStatus: 200, wantOID: DefaultObjectID, wantAppID: DefaultAppID},
		{name: "client_id", q: ok("client_id", "client-ua"), header: "kvproxy-dev-header", wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "client_id other case", q: ok("client_id", "CLIENT-UA"), header: "kvproxy-dev-header", wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "principal_id", q: ok("principal_id", "object-ua"), header: "kvproxy-dev-header", wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "object_id", q: ok("object_id", "object-ua"), header: "kvproxy-dev-header", wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "mi_res_id", q: ok("mi_res_id", uamiRes), header: "kvproxy-dev-header", wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "unknown client_id", q: ok("client_id", "nope"), header: "kvproxy-dev-header", wantStatus: 400,
			wantMsg: "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."},
		{name: "unknown mi_res_id", q: ok("mi_res_id", "/subscriptions/x"), header: "kvproxy-dev-header", wantStatus: 400,
			wantMsg: "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."},
		{name: "missing header", q: ok(), wantStatus: 400, wantMsg: "The X-IDENTITY-HEADER header is missing or invalid."},
		{name: "wrong header", q: ok(), header: "guess", wantStatus: 400, wantMsg: "The X-IDENTITY-HEADER header is missing or invalid."},
		{name: "old api-version", q: query("api-version", "2017-09-01", "resource", "https://vault.azure.net"), header: "kvproxy-dev-header", wantStatus: 400,
			wantMsg: "The api-version parameter is missing or not supported; use 2019-08-01."},
		{name: "missing resource", q: query("api-version", "2019-08-01"), header: "kvproxy-dev-header", wantStatus: 400, wantMsg: "The resource parameter is missing."},
	}
	issued := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := identityGet(t, context.Background(), endpoint, tt.q, tt.header)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if got := s.Requests(); got != i+1 {
				t.Errorf("Requests() = %d, want %d", got, i+1)
			}
			if r.status != 200 {
				var e msiError
				r.decode(t, &e)
				if e.StatusCode != tt.wantStatus || e.Message != tt.wantMsg {
					t.Errorf("error = %+v, want message %q", e, tt.wantMsg)
				}
				return
			}
			issued++
			// The wire format App Service uses: every field a string.
			var raw map[string]any
			r.decode(t, &raw)
			wantExp := strconv.FormatInt(testNow.Add(24*time.Hour).Unix(), 10)
			if raw["expires_on"] != wantExp || raw["resource"] != "https://vault.azure.net" || raw["token_type"] != "Bearer" || raw["client_id"] != tt.wantAppID {
				t.Errorf("body = %s", r.body)
			}
			checkIssued(t, raw["access_token"].(string), Identity{ObjectID: tt.wantOID, AppID: tt.wantAppID, ResourceID: tt.wantMIRID})
			if got := s.Issued(); got != issued {
				t.Errorf("Issued() = %d, want %d", got, issued)
			}
		})
	}
}

// checkIssued checks a token a managed identity fake issued at testNow
// with its defaults, for the vault, to id.
func checkIssued(t *testing.T, token string, id Identity) {
	t.Helper()
	c, err := ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	want := TokenClaims{
		TenantID: DefaultTenantID, ObjectID: id.ObjectID, AppID: id.AppID, Audience: "https://vault.azure.net",
		Issuer: "https://sts.windows.net/" + DefaultTenantID + "/", IssuedAt: testNow, NotBefore: testNow,
		ExpiresAt: testNow.Add(24 * time.Hour), MIResourceID: id.ResourceID,
	}
	if c != want {
		t.Errorf("claims = %+v,\nwant     %+v", c, want)
	}
}

func TestIdentityServerDown(t *testing.T) {
	faults := new(IdentityFaults)
	s, endpoint := startIdentity(t, IdentityOptions{Header: "h", TenantID: "tenant-z", Lifetime: time.Hour, Faults: faults})
	q := query("api-version", "2019-08-01", "resource", "https://vault.azure.net")

	faults.SetDown(true)
	r := identityGet(t, context.Background(), endpoint, q, "h")
	var e msiError
	r.decode(t, &e)
	if r.status != 500 || e.StatusCode != 500 || e.Message != "An unexpected error occured while fetching the AAD Token." || e.CorrelationID == "" {
		t.Errorf("down: %d %s", r.status, r.body)
	}
	faults.SetDown(false)

	r = identityGet(t, context.Background(), endpoint, q, "h")
	var tok msiToken
	r.decode(t, &tok)
	c, err := ParseToken(tok.AccessToken)
	if err != nil || c.TenantID != "tenant-z" || !c.ExpiresAt.Equal(testNow.Add(time.Hour)) {
		t.Errorf("up: %d %s (%v)", r.status, r.body, err)
	}

	if want := strconv.FormatInt(testNow.Add(time.Hour).Unix(), 10); tok.ExpiresOn != want {
		t.Errorf("expires_on = %s, want %s", tok.ExpiresOn, want)
	}
	if s.Requests() != 2 || s.Issued() != 1 {
		t.Errorf("Requests %d Issued %d, want 2 and 1", s.Requests(), s.Issued())
	}

	req, _ := http.NewRequest(http.MethodPost, endpoint+"?"+q.Encode(), nil)
	req.Header.Set("X-IDENTITY-HEADER", "h")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d", res.StatusCode)
	}
}

func TestIdentityServerHold(t *testing.T) {
	faults := new(IdentityFaults)
	s, endpoint := startIdentity(t, IdentityOptions{Faults: faults})
	q := query("api-version", "2019-08-01", "resource", "https://vault.azure.net")

	release := faults.Hold()
	const n = 6
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			statuses <- identityGet(t, context.Background(), endpoint, q, "kvproxy-dev-header").status
		})
	}
	waitFor(t, "all requests to wait", func() bool { return faults.Waiting() == n })
	if s.Issued() != 0 {
		t.Fatalf("issued %d tokens while held", s.Issued())
	}

	// A held request whose client gives up leaves the queue.
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	waitFor(t, "the extra request to wait", func() bool { return faults.Waiting() == n+1 })
	cancel()
	<-gone
	waitFor(t, "the cancelled request to leave", func() bool { return faults.Waiting() == n })

	release()
	release() // harmless
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Errorf("status %d after release", st)
		}
	}
	if faults.Waiting() != 0 || s.Issued() != n || s.Requests() != n+1 {
		t.Errorf("Waiting %d Issued %d Requests %d", faults.Waiting(), s.Issued(), s.Requests())
	}

	// Released: requests no longer wait; a new Hold holds again.
	if r := identityGet(t, context.Background(), endpoint, q, "kvproxy-dev-header"); r.status != 200 {
		t.Errorf("after release: %d", r.status)
	}
	release2 := faults.Hold()
	done := make(chan int)
	go func() { done <- identityGet(t, context.Background(), endpoint, q, "kvproxy-dev-header").status }()
	waitFor(t, "a request to wait on the second hold", func() bool { return faults.Waiting() == 1 })
	release2()
	if st := <-done; st != 200 {
		t.Errorf("after second release: %d", st)
	}
}

func TestIdentityServerTokenIsJSONString(t *testing.T) {
	// MSAL accepts expires_on as a string or a number; App Service sends a
	// string, and so must the fake.
	_, endpoint := startIdentity(t, IdentityOptions{})
	r := identityGet(t, context.Background(), endpoint, query("api-version", "2019-08-01", "resource", "r"), "kvproxy-dev-header")
	var raw map[string]json.RawMessage
	r.decode(t, &raw)
	if e := string(raw["expires_on"]); !strings.HasPrefix(e, `"`) {
		t.Errorf("expires_on = %s, want a JSON string", e)
	}
}
