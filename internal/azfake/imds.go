package azfake

import (
	"cmp"
	"net/http"
	"strconv"
	"sync"
)

// IMDS's fixed address and the path of its managed identity token endpoint.
// azidentity calls http://169.254.169.254/metadata/identity/oauth2/token and
// nothing else: no variable moves it. Only a network namespace holding
// 169.254.169.254 lets a test serve it for real.
const (
	IMDSAddr = "169.254.169.254:80"
	IMDSPath = "/metadata/identity/oauth2/token"
)

// IMDSOptions configure an [IMDS].
type IMDSOptions struct {
	// Identities are the identities served, with their tenant, the token
	// lifetime and the clock, and the same defaults, as for the App Service
	// endpoint. Its Header and Faults belong to that endpoint and are not
	// used here.
	Identities IdentityOptions
	// Faults, when not nil, fails or holds token requests (tests only).
	Faults *IMDSFaults
}

// IMDS is the managed identity endpoint of the Azure Instance Metadata
// Service (api-version 2018-02-01), as azidentity's ManagedIdentityCredential
// calls it on Azure VMs and AKS nodes when no other managed identity source
// is configured: GET IMDSPath?api-version=…&resource=… with the header
// Metadata: true, optionally naming a user-assigned identity by client_id,
// object_id or msi_res_id. It is safe for concurrent use.
type IMDS struct {
	o   IMDSOptions
	srv server
	tokenCounts
}

// NewIMDS returns an IMDS managed identity endpoint.
func NewIMDS(o IMDSOptions) *IMDS {
	o.Identities = o.Identities.withDefaults()
	if o.Faults == nil {
		o.Faults = new(IMDSFaults) // injects nothing
	}
	return &IMDS{o: o}
}

// Start serves plain HTTP on addr (IMDSAddr inside a network namespace that
// holds it; "" is 127.0.0.1:0) and returns the token endpoint's URL. After
// Close, Start may be called again: an IMDS that is down, then back.
func (s *IMDS) Start(addr string) (string, error) {
	base, err := s.srv.start(s, addr, nil)
	if err != nil {
		return "", err
	}
	return base + IMDSPath, nil
}

// Close stops a server started with Start; connections to it are then
// refused.
func (s *IMDS) Close() error { return s.srv.close() }

// imdsError is IMDS's error body.
type imdsError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// imdsToken is IMDS's token body: every member a string, as IMDS sends them.
type imdsToken struct {
	AccessToken  string `json:"access_token"`
	ClientID     string `json:"client_id"`
	ExpiresIn    string `json:"expires_in"`
	ExpiresOn    string `json:"expires_on"`
	ExtExpiresIn string `json:"ext_expires_in"`
	NotBefore    string `json:"not_before"`
	RefreshToken string `json:"refresh_token"`
	Resource     string `json:"resource"`
	TokenType    string `json:"token_type"`
}

// ServeHTTP implements the token endpoint. Other paths get 404.
func (s *IMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != IMDSPath {
		http.NotFound(w, r)
		return
	}
	s.countRequest()
	if s.o.Faults.intercept(w, r) {
		return
	}

	// The answers to a missing Metadata header, to an unknown identity and
	// to a 500 are IMDS's (Microsoft's managed identity docs; azidentity's
	// tests); the wording of the others is made up.
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, imdsError{"method_not_allowed", "The request method is not supported; use GET."})
		return
	}
	if r.Header.Get("Metadata") != "true" {
		writeJSON(w, http.StatusBadRequest, imdsError{"bad_request_102", "Required metadata header not specified"})
		return
	}
	q := r.URL.Query()
	if v := q.Get("api-version"); v < "2018-02-01" {
		writeJSON(w, http.StatusBadRequest, imdsError{"invalid_request", "The api-version parameter is missing or not supported; use 2018-02-01 or later."})
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		writeJSON(w, http.StatusBadRequest, imdsError{"invalid_request", "Required query variable 'resource' is missing"})
		return
	}
	// MSAL names a resource id msi_res_id; Microsoft's docs say mi_res_id.
	id, ok := s.o.Identities.identity(q.Get("client_id"), q.Get("object_id"), cmp.Or(q.Get("msi_res_id"), q.Get("mi_res_id")))
	if !ok {
		writeJSON(w, http.StatusBadRequest, imdsError{"invalid_request", "Identity not found"})
		return
	}

	tok, now, exp := s.o.Identities.issue(id, resource)
	s.countIssued()
	life := strconv.FormatInt(int64(exp.Sub(now).Seconds()), 10)
	writeJSON(w, http.StatusOK, imdsToken{
		AccessToken:  tok,
		ClientID:     id.AppID,
		ExpiresIn:    life,
		ExpiresOn:    strconv.FormatInt(exp.Unix(), 10),
		ExtExpiresIn: life,
		NotBefore:    strconv.FormatInt(now.Unix(), 10),
		Resource:     resource,
		TokenType:    "Bearer",
	})
}

// IMDSFaults are a test's controls over an [IMDS]: failing and holding
// token requests. (IMDS down, connections refused, is [IMDS.Close].) They
// are kept apart from the IMDS as [IdentityFaults] are from the App Service
// endpoint. The zero value injects nothing. It is safe for concurrent use.
type IMDSFaults struct {
	held IdentityFaults // only its Hold: it is never set down

	mu     sync.Mutex
	status int
}

// FailWith makes every token request answer status (404, 410, 429 and 5xx
// are what IMDS asks clients to retry) with an IMDS error body; 0 ends the
// failure.
func (f *IMDSFaults) FailWith(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

// Hold makes token requests block, before they are otherwise handled, until
// release is called or their context ends; [IMDSFaults.Waiting] counts
// them. Calling release more than once is harmless.
func (f *IMDSFaults) Hold() (release func()) { return f.held.Hold() }

// Waiting returns the number of token requests currently blocked by Hold.
func (f *IMDSFaults) Waiting() int { return f.held.Waiting() }

// intercept applies the faults to a counted token request; it reports
// whether it answered (or dropped) the request.
func (f *IMDSFaults) intercept(w http.ResponseWriter, r *http.Request) bool {
	if f.held.intercept(w, r) {
		return true
	}
	f.mu.Lock()
	status := f.status
	f.mu.Unlock()
	if status == 0 {
		return false
	}
	e := imdsError{"server_error", http.StatusText(status)}
	switch status {
	case http.StatusInternalServerError:
		e = imdsError{"unknown", "Failed to retrieve token from the Active directory."}
	case http.StatusTooManyRequests:
		e = imdsError{"too_many_requests", "Too many requests; retry with exponential backoff."}
	case http.StatusServiceUnavailable:
		e = imdsError{"service_unavailable", "The service is unavailable; retry later."}
	}
	writeJSON(w, status, e)
	return true
}
