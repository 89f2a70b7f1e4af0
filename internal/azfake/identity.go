package azfake

import (
	"cmp"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Identity is a principal the fakes issue tokens for.
type Identity struct {
	ObjectID string // oid
	AppID    string // appid (the client id)
	// ResourceID is the ARM id of a managed identity, optional: it goes into
	// xms_mirid and selects a user-assigned identity by mi_res_id.
	ResourceID string
}

// IdentityOptions configure an [IdentityServer].
type IdentityOptions struct {
	// Header is the expected X-IDENTITY-HEADER value; default "kvproxy-dev-header".
	Header string
	// TenantID is the tenant of the identities; default DefaultTenantID.
	TenantID string
	// Identity is the system-assigned identity; default ObjectID
	// DefaultObjectID and AppID DefaultAppID.
	Identity Identity
	// UserAssigned are the user-assigned identities by client id. A request
	// naming an identity (client_id, principal_id, object_id or mi_res_id)
	// not in here gets 400.
	UserAssigned map[string]Identity
	// Lifetime is the token lifetime; default 24h.
	Lifetime time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Faults, when not nil, holds token requests or fails them (tests only).
	Faults *IdentityFaults
}

// IdentityServer is the managed identity endpoint of App Service and Azure
// Functions (api-version 2019-08-01): what azidentity's
// ManagedIdentityCredential calls when IDENTITY_ENDPOINT and IDENTITY_HEADER
// are set. It answers token requests on any path. It is safe for concurrent
// use.
type IdentityServer struct {
	o   IdentityOptions
	srv server
	tokenCounts
}

// NewIdentityServer returns an identity endpoint.
func NewIdentityServer(o IdentityOptions) *IdentityServer {
	if o.Header == "" {
		o.Header = "kvproxy-dev-header"
	}
	o = o.withDefaults()
	if o.Faults == nil {
		o.Faults = new(IdentityFaults) // injects nothing
	}
	return &IdentityServer{o: o}
}

// withDefaults fills in the identity model the managed identity fakes
// share: tenant, system-assigned identity, token lifetime and clock.
func (o IdentityOptions) withDefaults() IdentityOptions {
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.Identity == (Identity{}) {
		o.Identity = defaultIdentity
	}
	if o.Lifetime <= 0 {
		o.Lifetime = 24 * time.Hour
	}
	o.Now = orNow(o.Now)
	return o
}

// Start serves plain HTTP on 127.0.0.1:0, or on addr when it is not empty, and
// returns the endpoint URL for IDENTITY_ENDPOINT, "http://127.0.0.1:PORT/msi/token".
func (s *IdentityServer) Start(addr string) (string, error) {
	base, err := s.srv.start(s, addr, nil)
	if err != nil {
		return "", err
	}
	return base + "/msi/token", nil
}

// Close stops a server started with Start.
func (s *IdentityServer) Close() error { return s.srv.close() }

// tokenCounts count a managed identity endpoint's token requests and the
// tokens it issued. It is safe for concurrent use.
type tokenCounts struct {
	mu       sync.Mutex
	requests int
	issued   int
}

func (c *tokenCounts) countRequest() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
}

func (c *tokenCounts) countIssued() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issued++
}

// Requests returns the number of token requests received, failed ones included.
func (c *tokenCounts) Requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// Issued returns the number of tokens issued.
func (c *tokenCounts) Issued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued
}

// msiError is the App Service identity endpoint's error body.
type msiError struct {
	StatusCode    int    `json:"statusCode"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlationId,omitempty"`
}

// msiToken is the App Service identity endpoint's token body. expires_on is
// a string of unix seconds, as App Service sends it.
type msiToken struct {
	AccessToken string `json:"access_token"`
	ExpiresOn   string `json:"expires_on"`
	Resource    string `json:"resource"`
	TokenType   string `json:"token_type"`
	ClientID    string `json:"client_id"`
}

// ServeHTTP implements the token endpoint.
func (s *IdentityServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.countRequest()
	if s.o.Faults.intercept(w, r) {
		return
	}

	// Wording of the header, api-version and resource 400s made up.
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, msiError{405, "The requested resource does not support http method '" + r.Method + "'.", uuid.NewString()})
		return
	}
	if r.Header.Get("X-IDENTITY-HEADER") != s.o.Header {
		writeJSON(w, http.StatusBadRequest, msiError{400, "The X-IDENTITY-HEADER header is missing or invalid.", uuid.NewString()})
		return
	}
	q := r.URL.Query()
	if q.Get("api-version") != "2019-08-01" {
		writeJSON(w, http.StatusBadRequest, msiError{400, "The api-version parameter is missing or not supported; use 2019-08-01.", uuid.NewString()})
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		writeJSON(w, http.StatusBadRequest, msiError{400, "The resource parameter is missing.", uuid.NewString()})
		return
	}
	id, ok := s.o.identity(q.Get("client_id"), cmp.Or(q.Get("principal_id"), q.Get("object_id")), q.Get("mi_res_id"))
	if !ok {
		// As captured from App Service: no correlationId in this one.
		writeJSON(w, http.StatusBadRequest, msiError{StatusCode: 400, Message: "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."})
		return
	}

	tok, _, exp := s.o.issue(id, resource)
	s.countIssued()
	writeJSON(w, http.StatusOK, msiToken{
		AccessToken: tok,
		ExpiresOn:   strconv.FormatInt(exp.Unix(), 10),
		Resource:    resource,
		TokenType:   "Bearer",
		ClientID:    id.AppID,
	})
}

// issue mints a token for id and resource, issued now and living Lifetime.
func (o IdentityOptions) issue(id Identity, resource string) (token string, now, exp time.Time) {
	now = o.Now()
	exp = now.Add(o.Lifetime)
	token = MintToken(TokenClaims{
		TenantID:     o.TenantID,
		ObjectID:     id.ObjectID,
		AppID:        id.AppID,
		Audience:     resource,
		IssuedAt:     now,
		NotBefore:    now,
		ExpiresAt:    exp,
		MIResourceID: id.ResourceID,
	})
	return token, now, exp
}

// identity picks the system-assigned identity, or the user-assigned one the
// first non-empty selector names. A user-assigned identity without an AppID
// takes its map key.
func (o IdentityOptions) identity(clientID, objectID, resourceID string) (Identity, bool) {
	if clientID == "" && objectID == "" && resourceID == "" {
		return o.Identity, true
	}
	for c, id := range o.UserAssigned {
		if id.AppID == "" {
			id.AppID = c
		}
		var match bool
		switch {
		case clientID != "":
			match = strings.EqualFold(c, clientID)
		case objectID != "":
			match = strings.EqualFold(id.ObjectID, objectID)
		default:
			match = strings.EqualFold(id.ResourceID, resourceID)
		}
		if match {
			return id, true
		}
	}
	return Identity{}, false
}
