package azfake

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startEntra(t *testing.T, o EntraOptions) (*Entra, string, *http.Client) {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	tl := newTLS(t)
	e := NewEntra(o)
	authority, err := e.Start(tl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if !strings.HasPrefix(authority, "https://127.0.0.1:") || !strings.HasSuffix(authority, "/") {
		t.Fatalf("authority = %q", authority)
	}
	tr := tl.ClientTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return e, authority, &http.Client{Transport: tr}
}

type oauthErr struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri"`
}

func TestEntraOpenIDConfiguration(t *testing.T) {
	e, authority, c := startEntra(t, EntraOptions{})
	host := strings.TrimSuffix(strings.TrimPrefix(authority, "https://"), "/")

	r := do(t, c, http.MethodGet, authority+DefaultTenantID+"/v2.0/.well-known/openid-configuration", "", "")
	var cfg map[string]any
	r.decode(t, &cfg)
	base := "https://" + host + "/" + DefaultTenantID
	for k, want := range map[string]string{
		"issuer":                        base + "/v2.0",
		"token_endpoint":                base + "/oauth2/v2.0/token",
		"authorization_endpoint":        base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
	} {
		if cfg[k] != want {
			t.Errorf("%s = %v, want %s", k, cfg[k], want)
		}
	}

	r = do(t, c, http.MethodGet, authority+"other-tenant/v2.0/.well-known/openid-configuration", "", "")
	var oe oauthErr
	r.decode(t, &oe)
	if r.status != 400 || oe.Error != "invalid_tenant" || len(oe.ErrorCodes) != 1 || oe.ErrorCodes[0] != 90002 ||
		!strings.HasPrefix(oe.ErrorDescription, "AADSTS90002: Tenant 'other-tenant' not found.") {
		t.Errorf("unknown tenant: %d %s", r.status, r.body)
	}
	if r := do(t, c, http.MethodGet, authority+"x", "", ""); r.status != 404 {
		t.Errorf("unknown path: %d", r.status)
	}
	if e.Requests() != 0 {
		t.Errorf("Requests() = %d, want 0 (no token request yet)", e.Requests())
	}
}

func TestEntraToken(t *testing.T) {
	const federated = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3Zwcm94eTprdnByb3h5In0.c2ln"
	e, authority, c := startEntra(t, EntraOptions{
		Identity:       Identity{ObjectID: "sp-object", AppID: "app-1"},
		FederatedToken: federated,
		ClientSecret:   "s3cret",
		Lifetime:       90 * time.Minute,
	})
	tokenURL := authority + DefaultTenantID + "/oauth2/v2.0/token"
	form := func(kv ...string) string {
		v := url.Values{}
		v.Set("grant_type", "client_credentials")
		v.Set("client_id", "app-1")
		v.Set("scope", "https://vault.azure.net/.default openid offline_access profile")
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v.Encode()
	}
	assertion := []string{"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion", federated}
	wrongSubject := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"system:serviceaccount:other:sa"}`)) + ".c2ln"
	tests := []struct {
		name, url, body string
		wantStatus      int
		wantErr         string
		wantCode        int
		wantDesc        string // prefix of error_description after "AADSTS<code>: "
		wantAud         string
	}{
		{name: "workload identity", url: tokenURL, body: form(assertion...), wantStatus: 200, wantAud: "https://vault.azure.net"},
		{name: "client secret", url: tokenURL, body: form("client_secret", "s3cret"), wantStatus: 200, wantAud: "https://vault.azure.net"},
		{name: "other resource", url: tokenURL, body: form("client_secret", "s3cret", "scope", "https://storage.azure.com/.default"), wantStatus: 200, wantAud: "https://storage.azure.com"},
		{name: "wrong assertion", url: tokenURL, body: form("client_assertion_type", assertion[1], "client_assertion", wrongSubject), wantStatus: 401, wantErr: "invalid_client", wantCode: 700213,
			wantDesc: "No matching federated identity record found for presented assertion subject 'system:serviceaccount:other:sa'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion."},
		{name: "empty assertion", url: tokenURL, body: form("client_assertion_type", assertion[1]), wantStatus: 400, wantErr: "invalid_request", wantCode: 900144,
			wantDesc: "The request body must contain the following parameter: 'client_assertion'."},
		{name: "wrong secret", url: tokenURL, body: form("client_secret", "guess"), wantStatus: 401, wantErr: "invalid_client", wantCode: 7000215,
			wantDesc: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'app-1'."},
		{name: "no credential", url: tokenURL, body: form(), wantStatus: 401, wantErr: "invalid_client", wantCode: 7000218},
		{name: "unknown client", url: tokenURL, body: form(append([]string{"client_id", "app-2"}, assertion...)...), wantStatus: 400, wantErr: "unauthorized_client", wantCode: 700016,
			wantDesc: "Application with identifier 'app-2' was not found in the directory '" + DefaultTenantID + "'."},
		{name: "scope without .default", url: tokenURL, body: form("client_secret", "s3cret", "scope", "https://vault.azure.net"), wantStatus: 400, wantErr: "invalid_scope", wantCode: 1002012},
		{name: "missing scope", url: tokenURL, body: form("client_secret", "s3cret", "scope", ""), wantStatus: 400, wantErr: "invalid_request", wantCode: 900144,
			wantDesc: "The request body must contain the following parameter: 'scope'."},
		{name: "password grant", url: tokenURL, body: form("client_secret", "s3cret", "grant_type", "password"), wantStatus: 400, wantErr: "unsupported_grant_type", wantCode: 70003},
		{name: "other tenant", url: authority + "other/oauth2/v2.0/token", body: form("client_secret", "s3cret"), wantStatus: 400, wantErr: "invalid_tenant", wantCode: 90002,
			wantDesc: "Tenant 'other' not found."},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, tt.url, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got := e.Requests(); got != i+1 {
				t.Errorf("Requests() = %d, want %d", got, i+1)
			}
			if tt.wantStatus != 200 {
				var oe oauthErr
				if err := json.NewDecoder(res.Body).Decode(&oe); err != nil {
					t.Fatal(err)
				}
				prefix := "AADSTS" + strconv.Itoa(tt.wantCode) + ": " + tt.wantDesc
				if oe.Error != tt.wantErr || len(oe.ErrorCodes) != 1 || oe.ErrorCodes[0] != tt.wantCode || !strings.HasPrefix(oe.ErrorDescription, prefix) ||
					!strings.Contains(oe.ErrorDescription, "\r\nTrace ID: "+oe.TraceID+"\r\nCorrelation ID: "+oe.CorrelationID+"\r\nTimestamp: 2026-03-14 15:09:26Z") ||
					oe.ErrorURI != "https://login.microsoftonline.com/error?code="+strconv.Itoa(tt.wantCode) {
					t.Errorf("error = %+v,\nwant %s / %q", oe, tt.wantErr, prefix)
				}
				return
			}
			var tok struct {
				TokenType    string `json:"token_type"`
				ExpiresIn    int    `json:"expires_in"`
				ExtExpiresIn int    `json:"ext_expires_in"`
				AccessToken  string `json:"access_token"`
			}
			if err := json.NewDecoder(res.Body).Decode(&tok); err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.ExpiresIn != 5400 || tok.ExtExpiresIn != 5400 {
				t.Errorf("token response = %+v", tok)
			}
			cl, err := ParseToken(tok.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			want := TokenClaims{
				TenantID: DefaultTenantID, ObjectID: "sp-object", AppID: "app-1", Audience: tt.wantAud,
				Issuer: "https://sts.windows.net/" + DefaultTenantID + "/", IssuedAt: testNow, NotBefore: testNow, ExpiresAt: testNow.Add(90 * time.Minute),
			}
			if cl != want {
				t.Errorf("claims = %+v,\nwant     %+v", cl, want)
			}
		})
	}
}

func TestEntraAcceptsAnyAssertionByDefault(t *testing.T) {
	_, authority, c := startEntra(t, EntraOptions{})
	v := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {DefaultAppID},
		"scope":                 {"https://vault.azure.net/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {"anything"},
	}
	res, err := c.PostForm(authority+DefaultTenantID+"/oauth2/v2.0/token", v)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("status = %d", res.StatusCode)
	}
	// No ClientSecret configured: every secret is refused.
	v.Del("client_assertion_type")
	v.Del("client_assertion")
	v.Set("client_secret", "")
	res, err = c.PostForm(authority+DefaultTenantID+"/oauth2/v2.0/token", v)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("empty secret: status = %d", res.StatusCode)
	}
}
