package azfake

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// EntraOptions configure an [Entra].
type EntraOptions struct {
	// TenantID is the only tenant served; default DefaultTenantID.
	TenantID string
	// Identity is the application tokens are issued to; its AppID is the only
	// client_id accepted. Default ObjectID DefaultObjectID, AppID DefaultAppID.
	Identity Identity
	// FederatedToken is the client_assertion workload identity must present;
	// "" accepts any non-empty assertion.
	FederatedToken string
	// ClientSecret is the client_secret ClientSecretCredential must present;
	// "" refuses every secret.
	ClientSecret string
	// Lifetime is the token lifetime; default 1h.
	Lifetime time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Entra is a TLS stand-in for Microsoft Entra ID serving what azidentity's
// WorkloadIdentityCredential and ClientSecretCredential need when
// DisableInstanceDiscovery is set: the tenant's OpenID configuration
// (GET /{tenant}/v2.0/.well-known/openid-configuration) and the token
// endpoint's client credentials grant (POST /{tenant}/oauth2/v2.0/token).
// It is safe for concurrent use.
type Entra struct {
	o   EntraOptions
	srv server

	mu       sync.Mutex
	requests int
}

// NewEntra returns an Entra stand-in.
func NewEntra(o EntraOptions) *Entra {
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.Identity == (Identity{}) {
		o.Identity = defaultIdentity
	}
	if o.Lifetime <= 0 {
		o.Lifetime = time.Hour
	}
	o.Now = orNow(o.Now)
	return &Entra{o: o}
}

// Start serves Entra over TLS with t.ServerConfig on 127.0.0.1:0 and returns
// its authority host "https://127.0.0.1:PORT/", the value for
// AZURE_AUTHORITY_HOST or cloud.Configuration.ActiveDirectoryAuthorityHost.
func (e *Entra) Start(t *TLS) (string, error) {
	base, err := e.srv.start(e, "", t.ServerConfig)
	if err != nil {
		return "", err
	}
	return base + "/", nil
}

// Close stops a server started with Start.
func (e *Entra) Close() error { return e.srv.close() }

// Requests returns the number of requests to the token endpoint, failed ones
// included (OpenID configuration requests are not counted).
func (e *Entra) Requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

// ServeHTTP implements the OpenID configuration and token endpoints.
func (e *Entra) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tenant, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case rest == "v2.0/.well-known/openid-configuration" && r.Method == http.MethodGet:
		e.openIDConfiguration(w, r, tenant)
	case rest == "oauth2/v2.0/token" && r.Method == http.MethodPost:
		e.mu.Lock()
		e.requests++
		e.mu.Unlock()
		e.token(w, r, tenant)
	default:
		http.NotFound(w, r)
	}
}

func (e *Entra) openIDConfiguration(w http.ResponseWriter, r *http.Request, tenant string) {
	if !strings.EqualFold(tenant, e.o.TenantID) {
		e.tenantNotFound(w, tenant)
		return
	}
	base := "https://" + r.Host + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     "https://graph.microsoft.com/oidc/userinfo",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"},
		"kerberos_endpoint":                     base + "/kerberos",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	})
}

// token implements the client credentials grant.
func (e *Entra) token(w http.ResponseWriter, r *http.Request, tenant string) {
	if !strings.EqualFold(tenant, e.o.TenantID) {
		e.tenantNotFound(w, tenant)
		return
	}
	if err := r.ParseForm(); err != nil {
		e.oauthError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	for _, p := range []string{"grant_type", "client_id", "scope"} {
		if f.Get(p) == "" {
			e.oauthError(w, http.StatusBadRequest, "invalid_request", 900144, fmt.Sprintf("The request body must contain the following parameter: '%s'.", p))
			return
		}
	}
	if gt := f.Get("grant_type"); gt != "client_credentials" {
		e.oauthError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", gt))
		return
	}
	clientID := f.Get("client_id")
	if !strings.EqualFold(clientID, e.o.Identity.AppID) {
		e.oauthError(w, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, tenant))
		return
	}
	audience, ok := resourceOf(f.Get("scope"))
	if !ok {
		e.oauthError(w, http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", f.Get("scope")))
		return
	}

	switch {
	case f.Has("client_assertion") || f.Has("client_assertion_type"):
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			e.oauthError(w, http.StatusBadRequest, "invalid_request", 50027, "The client_assertion_type is not urn:ietf:params:oauth:client-assertion-type:jwt-bearer.")
			return
		}
		assertion := f.Get("client_assertion")
		if assertion == "" {
			e.oauthError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion'.")
			return
		}
		if e.o.FederatedToken != "" && assertion != e.o.FederatedToken {
			e.oauthError(w, http.StatusUnauthorized, "invalid_client", 700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", unverifiedSubject(assertion)))
			return
		}
	case f.Has("client_secret"):
		if e.o.ClientSecret == "" || f.Get("client_secret") != e.o.ClientSecret {
			e.oauthError(w, http.StatusUnauthorized, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID))
			return
		}
	default:
		e.oauthError(w, http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}

	now := e.o.Now()
	secs := int64(e.o.Lifetime / time.Second)
	writeJSON(w, http.StatusOK, struct {
		TokenType    string `json:"token_type"`
		ExpiresIn    int64  `json:"expires_in"`
		ExtExpiresIn int64  `json:"ext_expires_in"`
		AccessToken  string `json:"access_token"`
	}{
		TokenType:    "Bearer",
		ExpiresIn:    secs,
		ExtExpiresIn: secs,
		AccessToken: MintToken(TokenClaims{
			TenantID:  e.o.TenantID,
			ObjectID:  e.o.Identity.ObjectID,
			AppID:     clientID,
			Audience:  audience,
			IssuedAt:  now,
			NotBefore: now,
			ExpiresAt: now.Add(e.o.Lifetime),
		}),
	})
}

// resourceOf returns the resource of the one "<resource>/.default" scope in a
// space-separated scope list, ignoring the OpenID scopes MSAL adds.
func resourceOf(scope string) (string, bool) {
	var resources []string
	for _, s := range strings.Fields(scope) {
		switch s {
		case "openid", "profile", "offline_access":
			continue
		}
		r, ok := strings.CutSuffix(s, "/.default")
		if !ok || r == "" {
			return "", false
		}
		resources = append(resources, r)
	}
	if len(resources) != 1 {
		return "", false
	}
	return resources[0], true
}

func (e *Entra) tenantNotFound(w http.ResponseWriter, tenant string) {
	e.oauthError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found. This may happen if there are no active subscriptions for the tenant. Check to make sure you have the correct tenant ID. Check with your subscription administrator.", tenant))
}

// oauthError answers with Entra's error body: the AADSTS code and text,
// followed by trace and correlation ids and a timestamp.
func (e *Entra) oauthError(w http.ResponseWriter, status int, code string, aadsts int, text string) {
	traceID, correlationID := uuid.NewString(), uuid.NewString()
	ts := e.o.Now().UTC().Format("2006-01-02 15:04:05Z")
	writeJSON(w, status, struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorCodes       []int  `json:"error_codes"`
		Timestamp        string `json:"timestamp"`
		TraceID          string `json:"trace_id"`
		CorrelationID    string `json:"correlation_id"`
		ErrorURI         string `json:"error_uri"`
	}{
		Error:            code,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", aadsts, text, traceID, correlationID, ts),
		ErrorCodes:       []int{aadsts},
		Timestamp:        ts,
		TraceID:          traceID,
		CorrelationID:    correlationID,
		ErrorURI:         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}
