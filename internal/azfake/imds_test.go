package azfake

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

func startIMDS(t *testing.T, o IMDSOptions) (*IMDS, string) {
	t.Helper()
	if o.Identities.Now == nil {
		o.Identities.Now = fixedNow
	}
	s := NewIMDS(o)
	endpoint, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") || !strings.HasSuffix(endpoint, IMDSPath) {
		t.Fatalf("endpoint = %q", endpoint)
	}
	return s, endpoint
}

// metadata is the header IMDS requires.
func metadata(v string) http.Header { return http.Header{"Metadata": {v}} }

func imdsQuery(kv ...string) url.Values {
	return query(append([]string{"api-version", "2018-02-01", "resource", "https://vault.azure.net"}, kv...)...)
}

func TestIMDSProtocol(t *testing.T) {
	const uamiRes = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua"
	s, endpoint := startIMDS(t, IMDSOptions{Identities: IdentityOptions{
		UserAssigned: map[string]Identity{"client-ua": {ObjectID: "object-ua", ResourceID: uamiRes}},
	}})
	tests := []struct {
		name       string
		method     string // default GET
		q          url.Values
		h          http.Header
		wantStatus int
		wantErr    imdsError // for errors
		wantOID    string    // for successes
		wantAppID  string
		wantMIRID  string
	}{
		{name: "system assigned", q: imdsQuery(), h: metadata("true"), wantStatus: 200, wantOID: DefaultObjectID, wantAppID: DefaultAppID},
		{name: "later api-version", q: query("api-version", "2019-08-01", "resource", "https://vault.azure.net"), h: metadata("true"), wantStatus: 200,
			wantOID: DefaultObjectID, wantAppID: DefaultAppID},
		{name: "client_id", q: imdsQuery("client_id", "client-ua"), h: metadata("true"), wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "object_id", q: imdsQuery("object_id", "object-ua"), h: metadata("true"), wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "msi_res_id (MSAL)", q: imdsQuery("msi_res_id", uamiRes), h: metadata("true"), wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "mi_res_id (the docs)", q: imdsQuery("mi_res_id", uamiRes), h: metadata("true"), wantStatus: 200, wantOID: "object-ua", wantAppID: "client-ua", wantMIRID: uamiRes},
		{name: "unknown client_id", q: imdsQuery("client_id", "nope"), h: metadata("true"), wantStatus: 400,
			wantErr: imdsError{"invalid_request", "Identity not found"}},
		{name: "no Metadata header", q: imdsQuery(), h: http.Header{}, wantStatus: 400,
			wantErr: imdsError{"bad_request_102", "Required metadata header not specified"}},
		{name: "Metadata not lower case", q: imdsQuery(), h: metadata("True"), wantStatus: 400,
			wantErr: imdsError{"bad_request_102", "Required metadata header not specified"}},
		{name: "no api-version", q: query("resource", "https://vault.azure.net"), h: metadata("true"), wantStatus: 400,
			wantErr: imdsError{"invalid_request", "The api-version parameter is missing or not supported; use 2018-02-01 or later."}},
		{name: "old api-version", q: query("api-version", "2017-09-01", "resource", "https://vault.azure.net"), h: metadata("true"), wantStatus: 400,
			wantErr: imdsError{"invalid_request", "The api-version parameter is missing or not supported; use 2018-02-01 or later."}},
		{name: "no resource", q: query("api-version", "2018-02-01"), h: metadata("true"), wantStatus: 400,
			wantErr: imdsError{"invalid_request", "Required query variable 'resource' is missing"}},
		{name: "POST", method: http.MethodPost, q: imdsQuery(), h: metadata("true"), wantStatus: 405,
			wantErr: imdsError{"method_not_allowed", "The request method is not supported; use GET."}},
	}
	issued := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tokenRequest(t, context.Background(), cmp.Or(tt.method, http.MethodGet), endpoint, tt.q, tt.h)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if got := s.Requests(); got != i+1 {
				t.Errorf("Requests() = %d, want %d", got, i+1)
			}
			if r.status != 200 {
				var e imdsError
				r.decode(t, &e)
				if e != tt.wantErr {
					t.Errorf("error = %+v, want %+v", e, tt.wantErr)
				}
				return
			}
			issued++
			// IMDS's wire format: every member a string.
			var raw map[string]any
			r.decode(t, &raw)
			want := map[string]any{
				"client_id": tt.wantAppID, "expires_in": "86400", "ext_expires_in": "86400",
				"expires_on": strconv.FormatInt(testNow.Add(24*time.Hour).Unix(), 10), "not_before": strconv.FormatInt(testNow.Unix(), 10),
				"refresh_token": "", "resource": "https://vault.azure.net", "token_type": "Bearer",
			}
			for k, v := range want {
				if raw[k] != v {
					t.Errorf("%s = %#v, want %#v", k, raw[k], v)
				}
			}
			checkIssued(t, raw["access_token"].(string), Identity{ObjectID: tt.wantOID, AppID: tt.wantAppID, ResourceID: tt.wantMIRID})
			if got := s.Issued(); got != issued {
				t.Errorf("Issued() = %d, want %d", got, issued)
			}
		})
	}
	// Other paths are no token requests.
	base := strings.TrimSuffix(endpoint, IMDSPath)
	if r := tokenRequest(t, context.Background(), http.MethodGet, base+"/metadata/instance", query("api-version", "2021-02-01"), metadata("true")); r.status != 404 {
		t.Errorf("/metadata/instance: %d", r.status)
	}
	if got := s.Requests(); got != len(tests) {
		t.Errorf("Requests() = %d after a request elsewhere, want %d", got, len(tests))
	}
}

func TestIMDSFailures(t *testing.T) {
	faults := new(IMDSFaults)
	s, endpoint := startIMDS(t, IMDSOptions{Faults: faults, Identities: IdentityOptions{TenantID: "tenant-z", Lifetime: time.Hour}})
	tests := []struct {
		status int
		want   imdsError
	}{
		{500, imdsError{"unknown", "Failed to retrieve token from the Active directory."}},
		{503, imdsError{"service_unavailable", "The service is unavailable; retry later."}},
		{429, imdsError{"too_many_requests", "Too many requests; retry with exponential backoff."}},
		{404, imdsError{"server_error", "Not Found"}},
	}
	for _, tt := range tests {
		faults.FailWith(tt.status)
		r := tokenRequest(t, context.Background(), http.MethodGet, endpoint, imdsQuery(), metadata("true"))
		var e imdsError
		r.decode(t, &e)
		if r.status != tt.status || e != tt.want {
			t.Errorf("FailWith(%d): %d %s", tt.status, r.status, r.body)
		}
	}
	faults.FailWith(0)
	r := tokenRequest(t, context.Background(), http.MethodGet, endpoint, imdsQuery(), metadata("true"))
	var tok imdsToken
	r.decode(t, &tok)
	if c, err := ParseToken(tok.AccessToken); r.status != 200 || err != nil || c.TenantID != "tenant-z" || tok.ExpiresIn != "3600" {
		t.Errorf("after FailWith(0): %d %s (%v)", r.status, r.body, err)
	}
	if s.Requests() != len(tests)+1 || s.Issued() != 1 {
		t.Errorf("Requests %d Issued %d, want %d and 1", s.Requests(), s.Issued(), len(tests)+1)
	}

	// Down: connections are refused; then back on the same address.
	addr := strings.TrimSuffix(strings.TrimPrefix(endpoint, "http://"), IMDSPath)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(endpoint); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("IMDS closed: %v, want connection refused", err)
	}
	again, err := s.Start(addr)
	if err != nil || again != endpoint {
		t.Fatalf("Start again: %q, %v", again, err)
	}
	if r := tokenRequest(t, context.Background(), http.MethodGet, endpoint, imdsQuery(), metadata("true")); r.status != 200 {
		t.Errorf("back up: %d %s", r.status, r.body)
	}
}

func TestIMDSHold(t *testing.T) {
	faults := new(IMDSFaults)
	s, endpoint := startIMDS(t, IMDSOptions{Faults: faults})
	release := faults.Hold()
	const n = 4
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			statuses <- tokenRequest(t, context.Background(), http.MethodGet, endpoint, imdsQuery(), metadata("true")).status
		})
	}
	waitFor(t, "all requests to wait", func() bool { return faults.Waiting() == n })
	if s.Issued() != 0 {
		t.Fatalf("issued %d tokens while held", s.Issued())
	}
	release()
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Errorf("status %d after release", st)
		}
	}
	if faults.Waiting() != 0 || s.Issued() != n || s.Requests() != n {
		t.Errorf("Waiting %d Issued %d Requests %d", faults.Waiting(), s.Issued(), s.Requests())
	}
}

// handlerTransport hands azidentity's requests to an http.Handler in
// process: azidentity always calls 169.254.169.254, which a unit test
// cannot listen on. What the handler sees is the request azidentity sent.
type handlerTransport struct{ h http.Handler }

func (ht handlerTransport) Do(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	ht.h.ServeHTTP(rec, req)
	res := rec.Result()
	res.Request = req
	return res, nil
}

// useIMDS makes azidentity's managed identity credential pick IMDS.
func useIMDS(t *testing.T) {
	for _, v := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"} {
		t.Setenv(v, "")
	}
}

// azidentity's requests are accepted, for every way of naming an identity,
// and its errors are the ones it gives for IMDS.
func TestManagedIdentityCredentialOverIMDS(t *testing.T) {
	useIMDS(t)
	const resID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kvproxy"
	s := NewIMDS(IMDSOptions{Identities: IdentityOptions{UserAssigned: map[string]Identity{
		"c0ffee00-0000-0000-0000-000000000001": {ObjectID: "0b1ec700-0000-0000-0000-000000000001", ResourceID: resID},
	}}})
	tests := []struct {
		name       string
		id         azidentity.ManagedIDKind
		wantOID    string
		wantStatus int // 0: success
		wantError  string
	}{
		{name: "system assigned", wantOID: DefaultObjectID},
		{name: "client id", id: azidentity.ClientID("c0ffee00-0000-0000-0000-000000000001"), wantOID: "0b1ec700-0000-0000-0000-000000000001"},
		{name: "object id", id: azidentity.ObjectID("0b1ec700-0000-0000-0000-000000000001"), wantOID: "0b1ec700-0000-0000-0000-000000000001"},
		{name: "resource id", id: azidentity.ResourceID(resID), wantOID: "0b1ec700-0000-0000-0000-000000000001"},
		{name: "unknown client id", id: azidentity.ClientID("c0ffee00-0000-0000-0000-00000000ffff"), wantStatus: http.StatusBadRequest,
			wantError: "the requested identity isn't assigned to this resource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Requests()
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: tt.id,
				ClientOptions: azcore.ClientOptions{Transport: handlerTransport{s}, Retry: policy.RetryOptions{MaxRetries: -1}}})
			if err != nil {
				t.Fatal(err)
			}
			scope := uniqueScope("imds")
			tok, err := getToken(t, cred, scope)
			if s.Requests() != before+1 {
				t.Errorf("%d IMDS requests for one GetToken, want 1", s.Requests()-before)
			}
			c, ok := tokenOrRefusal(t, tok, err, tt.wantStatus, tt.wantError)
			if !ok {
				return
			}
			if c.ObjectID != tt.wantOID || c.Audience != strings.TrimSuffix(scope, "/.default") || !tok.ExpiresOn.Equal(c.ExpiresAt) {
				t.Errorf("claims = %+v, ExpiresOn %v", c, tok.ExpiresOn)
			}
		})
	}
}
