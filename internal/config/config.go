// Package config defines kvproxy's configuration: one struct parsed from
// environment variables with github.com/caarlos0/env/v11, validated in one
// pass that reports every problem at once, each naming its variable.
//
// The variable names are a contract shared with the Helm chart, the
// manifests in deploy/ and users' scripts; the help text printed by
// `kvproxy -h` is generated from the struct tags below, so it cannot drift.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Values of KVPROXY_CREDENTIAL. Every one but auto names an auth.Kind (a
// test of internal/app, which imports both, holds them in step).
const (
	CredentialAuto             = "auto"
	CredentialManagedIdentity  = "managed-identity"
	CredentialWorkloadIdentity = "workload-identity"
	CredentialClientSecret     = "client-secret"
	CredentialAzureCLI         = "azure-cli"
)

// Secret holds a sensitive value. It never prints its contents through fmt,
// slog or encoding/json.
type Secret string

// String returns a redacted placeholder.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// LogValue implements slog.LogValuer so a Secret never reaches a log.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler with the redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is kvproxy's whole configuration. Fields tagged `desc` are listed by
// `kvproxy -h`; the Azure SDK variables kvproxy consults are listed too.
type Config struct {
	VaultURL                 string        `env:"KVPROXY_VAULT_URL" desc:"Vault to forward to: https://<name>.vault.azure.net, or a Managed HSM, in any Azure cloud. Other hosts are refused unless KVPROXY_ALLOW_UNKNOWN_VAULT_HOST=true; an IP address or localhost (a stand-in) needs KVPROXY_TOKEN_SCOPE. http:// is refused. Required."`
	AllowUnknownVaultHost    bool          `env:"KVPROXY_ALLOW_UNKNOWN_VAULT_HOST" envDefault:"false" desc:"Allow a vault host outside the known Key Vault and Managed HSM suffixes (a private cloud), and a KVPROXY_TOKEN_SCOPE that is no Key Vault or Managed HSM scope of the vault's cloud. Logged at WARN."`
	ListenAddr               string        `env:"KVPROXY_LISTEN_ADDR" envDefault:"127.0.0.1:8380" desc:"Proxy listener: host:port, or unix:///path/kvproxy.sock for a unix socket (created 0660, a stale socket file is replaced)."`
	AllowedHosts             []string      `env:"KVPROXY_ALLOWED_HOSTS" envSeparator:"," desc:"Host names the proxy listener answers besides IP addresses and localhost (comma-separated; the Helm chart sets the service's DNS names). Any other Host gets 421 host-not-allowed, against DNS rebinding. Unix sockets are not checked."`
	AdminAddr                string        `env:"KVPROXY_ADMIN_ADDR" envDefault:"127.0.0.1:8381" desc:"Admin listener serving /healthz, /readyz and /metrics: host:port, or unix:///path/admin.sock (on a VM; the kubelet and Prometheus need TCP)."`
	Credential               string        `env:"KVPROXY_CREDENTIAL" envDefault:"auto" desc:"auto, managed-identity, workload-identity, client-secret or azure-cli. auto: workload identity when AZURE_FEDERATED_TOKEN_FILE is set, client secret when AZURE_CLIENT_SECRET is set, else managed identity."`
	IdentityClientID         string        `env:"KVPROXY_IDENTITY_CLIENT_ID" desc:"Client ID of a user-assigned managed identity (or of the workload identity / app registration). Defaults to AZURE_CLIENT_ID when that is set."`
	TokenScope               string        `env:"KVPROXY_TOKEN_SCOPE" desc:"Token scope. Derived from the vault host suffix (public, China, US Gov clouds, Managed HSM); required when the host has no known suffix. Setting it skips challenge verification."`
	RefreshBefore            time.Duration `env:"KVPROXY_REFRESH_BEFORE" envDefault:"5m" desc:"Start refreshing the token this long before it expires (at most half its lifetime)."`
	UpstreamTimeout          time.Duration `env:"KVPROXY_UPSTREAM_TIMEOUT" envDefault:"30s" desc:"Deadline for one request to the vault, retries included."`
	APIVersion               string        `env:"KVPROXY_API_VERSION" envDefault:"7.5" desc:"api-version added to requests that carry none."`
	RequireMetadataHeader    bool          `env:"KVPROXY_REQUIRE_METADATA_HEADER" envDefault:"true" desc:"Refuse requests without the header 'Metadata: true' (blocks server-side request forgery through the app)."`
	ReadOnly                 bool          `env:"KVPROXY_READ_ONLY" envDefault:"false" desc:"Refuse every method but GET and HEAD."`
	MaxBodyBytes             int64         `env:"KVPROXY_MAX_BODY_BYTES" envDefault:"1048576" desc:"Largest request body forwarded; larger bodies get 413."`
	MaxBufferedBytes         int64         `env:"KVPROXY_MAX_BUFFERED_BYTES" envDefault:"33554432" desc:"Bytes of request bodies held in memory at once (at least KVPROXY_MAX_BODY_BYTES). Room for a body is reserved before it is read; a request that finds none within 5s gets 503 overloaded."`
	MaxConns                 int           `env:"KVPROXY_MAX_CONNS" envDefault:"4096" desc:"Client connections the proxy listener serves at once; a connection over it gets 503 overloaded and is closed. An idle connection costs a few KiB (about 16 KiB for the first 256)."`
	ShutdownTimeout          time.Duration `env:"KVPROXY_SHUTDOWN_TIMEOUT" envDefault:"20s" desc:"How long in-flight requests may drain after SIGTERM or SIGINT."`
	RetryMax                 int           `env:"KVPROXY_RETRY_MAX" envDefault:"2" desc:"Retries of a request the vault answered 429 (any method: the vault did nothing) or 503 (GET and HEAD only); 0 disables."`
	RetryMaxWait             time.Duration `env:"KVPROXY_RETRY_MAX_WAIT" envDefault:"10s" desc:"Longest wait before one retry, whatever Retry-After asks."`
	TokenRetryInterval       time.Duration `env:"KVPROXY_TOKEN_RETRY_INTERVAL" envDefault:"1s" desc:"What requests may make the credential do: after a failed token fetch, at most one request per interval starts another; a token the vault rejected (401) is renewed at most once per interval."`
	DisableInstanceDiscovery bool          `env:"KVPROXY_DISABLE_INSTANCE_DISCOVERY" envDefault:"false" desc:"Skip Microsoft Entra instance discovery for workload identity and client secret: needed when AZURE_AUTHORITY_HOST is a private or disconnected cloud's authority."`
	CacheTTL                 time.Duration `env:"KVPROXY_CACHE_TTL" envDefault:"0" desc:"How long a read of one secret, key or certificate is served from memory without asking the vault; 0 turns the cache off. See the README's secret cache section."`
	CacheStaleIfError        time.Duration `env:"KVPROXY_CACHE_STALE_IF_ERROR" envDefault:"24h" desc:"Past the TTL, how long an entry may still be served (X-Cache: STALE) when the vault cannot answer (unreachable, timeout, 5xx, 429 after retries) or no token can be had. Never after the vault refused the item."`
	CacheMaxBytes            int64         `env:"KVPROXY_CACHE_MAX_BYTES" envDefault:"16777216" desc:"Memory bound for cached bodies; least recently used entries go first."`
	TLSCertFile              string        `env:"KVPROXY_TLS_CERT_FILE" desc:"Serve the proxy listener over TLS 1.2+ with this certificate (PEM, chain included); re-read when it changes (cert-manager rotates it). Set with KVPROXY_TLS_KEY_FILE."`
	TLSKeyFile               string        `env:"KVPROXY_TLS_KEY_FILE" desc:"The private key (PEM) of KVPROXY_TLS_CERT_FILE."`
	ClientAuth               string        `env:"KVPROXY_CLIENT_AUTH" envDefault:"none" desc:"none, or kubernetes: every client sends its projected ServiceAccount token (Authorization: Bearer), verified against KVPROXY_CLIENT_AUTH_ISSUER, and KVPROXY_ACCESS_POLICY_FILE decides what its subject may do."`
	ClientAuthIssuer         string        `env:"KVPROXY_CLIENT_AUTH_ISSUER" desc:"The cluster's service-account token issuer (https), required with KVPROXY_CLIENT_AUTH=kubernetes: OIDC discovery at <issuer>/.well-known/openid-configuration, then its jwks_uri."`
	ClientAuthAudience       string        `env:"KVPROXY_CLIENT_AUTH_AUDIENCE" envDefault:"kvproxy" desc:"The audience client tokens must carry."`
	ClientAuthTokenFile      string        `env:"KVPROXY_CLIENT_AUTH_TOKEN_FILE" desc:"A bearer token file for fetching the issuer's discovery document and keys (the in-cluster API server requires one); a ca.crt beside it is trusted for the issuer."`
	AccessPolicyFile         string        `env:"KVPROXY_ACCESS_POLICY_FILE" desc:"The access rules (YAML or JSON), required with KVPROXY_CLIENT_AUTH=kubernetes; re-read when it changes (a bad reload keeps the previous rules)."`
	AuditLog                 bool          `env:"KVPROXY_AUDIT_LOG" envDefault:"false" desc:"Write one JSON line per request, \"msg\":\"audit\", on stderr: client, method, path, status, diagnosis, cache result, vault request id, duration."`
	LogLevel                 string        `env:"KVPROXY_LOG_LEVEL" envDefault:"info" desc:"debug, info, warn or error. debug logs one line per proxied request."`
	LogFormat                string        `env:"KVPROXY_LOG_FORMAT" envDefault:"json" desc:"json, or text for humans."`

	// Azure SDK variables, read by the credential; listed for `kvproxy -h`.
	AzureClientID           string `env:"AZURE_CLIENT_ID" sdk:"Client ID used when KVPROXY_IDENTITY_CLIENT_ID is empty; set by Azure Workload Identity."`
	AzureTenantID           string `env:"AZURE_TENANT_ID" sdk:"Tenant for workload identity and client secret credentials."`
	AzureFederatedTokenFile string `env:"AZURE_FEDERATED_TOKEN_FILE" sdk:"Projected service account token; its presence selects workload identity under auto."`
	AzureClientSecret       Secret `env:"AZURE_CLIENT_SECRET" sdk:"App registration secret; its presence selects client-secret under auto. Never logged."`
	AzureAuthorityHost      string `env:"AZURE_AUTHORITY_HOST" sdk:"Microsoft Entra authority (https) for workload identity and client secret credentials."`
	IdentityEndpoint        string `env:"IDENTITY_ENDPOINT" sdk:"Managed identity endpoint (App Service protocol, with IDENTITY_HEADER); IMDS is used when unset."`
}

// Load parses the configuration from environ (a map of variable to value,
// as env.Options.Environment takes) and validates it. The returned error
// lists every problem, one per line, each starting with the variable name.
func Load(environ map[string]string) (*Config, error) {
	var c Config
	problems := unknownVariables(environ)
	failed := map[string]bool{}
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		lines, names := describeParseErrors(err)
		problems = append(problems, lines...)
		for _, n := range names {
			failed[n] = true
		}
	}
	if c.IdentityClientID == "" {
		c.IdentityClientID = c.AzureClientID
	}
	problems = append(problems, c.validate(failed)...)
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return &c, nil
}

// Error is an invalid configuration: one line per problem.
type Error struct{ Problems []string }

func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// describeParseErrors turns env's errors into "VARIABLE: problem" lines,
// and names the variables that failed.
func describeParseErrors(err error) (lines, names []string) {
	var agg env.AggregateError
	errs := []error{err}
	if errors.As(err, &agg) {
		errs = agg.Errors
	}
	keys := fieldKeys()
	for _, e := range errs {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := keys[pe.Name]
			lines = append(lines, fmt.Sprintf("%s: %s", name, describeValueError(pe)))
			names = append(names, name)
			continue
		}
		lines = append(lines, e.Error())
	}
	return lines, names
}

func describeValueError(pe env.ParseError) string {
	var value string
	var numErr *strconv.NumError
	switch {
	case errors.As(pe.Err, &numErr):
		value = numErr.Num
	default:
		// time.ParseDuration quotes the input: time: invalid duration "soon".
		msg := pe.Err.Error()
		if i := strings.Index(msg, `"`); i >= 0 {
			if v, err := strconv.Unquote(msg[i:]); err == nil {
				value = v
			}
		}
	}
	what := pe.Type.String()
	switch pe.Type {
	case reflect.TypeFor[time.Duration]():
		what = "a duration (like 30s or 5m)"
	case reflect.TypeFor[bool]():
		what = "a boolean (true or false)"
	case reflect.TypeFor[int](), reflect.TypeFor[int64]():
		what = "a whole number"
	}
	return fmt.Sprintf("%q is not %s", value, what)
}

// fieldKeys maps each Config field name to its variable.
func fieldKeys() map[string]string {
	t := reflect.TypeFor[Config]()
	m := make(map[string]string, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		m[f.Name], _, _ = strings.Cut(f.Tag.Get("env"), ",")
	}
	return m
}

func (c *Config) validate(failed map[string]bool) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	c.validateVault(add)
	if err := validateListen(c.ListenAddr); err != nil {
		add("KVPROXY_LISTEN_ADDR: %v", err)
	}
	for _, h := range c.AllowedHosts {
		if h = strings.TrimSpace(h); h == "" || strings.ContainsAny(h, "/@?# ") || strings.Contains(h, "://") {
			add("KVPROXY_ALLOWED_HOSTS: %q is not a host name (want names such as kvproxy.security.svc, comma-separated)", h)
		}
	}
	if err := validateListen(c.AdminAddr); err != nil {
		add("KVPROXY_ADMIN_ADDR: %v", err)
	} else if ap, ok := UnixSocketPath(c.AdminAddr); ok {
		if lp, ok := UnixSocketPath(c.ListenAddr); ok && lp == ap {
			add("KVPROXY_ADMIN_ADDR: %q is also KVPROXY_LISTEN_ADDR; give the admin listener its own socket", c.AdminAddr)
		}
	}
	switch c.Credential {
	case CredentialAuto, CredentialManagedIdentity, CredentialWorkloadIdentity, CredentialClientSecret, CredentialAzureCLI:
	default:
		add("KVPROXY_CREDENTIAL: %q is not one of auto, managed-identity, workload-identity, client-secret, azure-cli", c.Credential)
	}
	// A variable that failed to parse holds its zero value; a range check
	// would only repeat its problem in other words. Every other variable is
	// checked in the same round.
	durations := []struct {
		name     string
		d        time.Duration
		min, max time.Duration
		why      string
	}{
		{"KVPROXY_REFRESH_BEFORE", c.RefreshBefore, time.Nanosecond, 24*time.Hour - time.Nanosecond,
			"longer than a managed identity token's 24 h life"},
		{"KVPROXY_UPSTREAM_TIMEOUT", c.UpstreamTimeout, time.Nanosecond, 10 * time.Minute, "no Key Vault request takes that long"},
		{"KVPROXY_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, time.Nanosecond, time.Hour, "Kubernetes would kill the pod long before"},
		{"KVPROXY_RETRY_MAX_WAIT", c.RetryMaxWait, time.Nanosecond, 10 * time.Minute, "no client waits that long"},
		{"KVPROXY_TOKEN_RETRY_INTERVAL", c.TokenRetryInterval, 10 * time.Millisecond, time.Minute,
			"a token outage would go unnoticed that long"},
	}
	for _, d := range durations {
		switch {
		case failed[d.name]:
		case d.d < d.min && d.min == time.Nanosecond:
			add("%s: %q must be greater than zero", d.name, d.d.String())
		case d.d < d.min:
			add("%s: %q must be at least %v", d.name, d.d.String(), d.min)
		case d.d > d.max:
			add("%s: %q is too long: %s (at most %v)", d.name, d.d.String(), d.why, d.max.Round(time.Second))
		}
	}
	if c.APIVersion == "" || strings.ContainsAny(c.APIVersion, "&#?= /") {
		add("KVPROXY_API_VERSION: %q is not an api-version (e.g. 7.5)", c.APIVersion)
	}
	if !failed["KVPROXY_MAX_BODY_BYTES"] && (c.MaxBodyBytes < 1 || c.MaxBodyBytes > maxBodyLimit) {
		add("KVPROXY_MAX_BODY_BYTES: %d must be between 1 and %d (64 MiB; Key Vault secrets are at most 25 KiB)", c.MaxBodyBytes, maxBodyLimit)
	}
	if !failed["KVPROXY_MAX_BUFFERED_BYTES"] && !failed["KVPROXY_MAX_BODY_BYTES"] && (c.MaxBufferedBytes < c.MaxBodyBytes || c.MaxBufferedBytes > 16<<30) {
		add("KVPROXY_MAX_BUFFERED_BYTES: %d must be between KVPROXY_MAX_BODY_BYTES (%d: one largest body must fit) and %d (16 GiB)", c.MaxBufferedBytes, c.MaxBodyBytes, int64(16<<30))
	}
	if !failed["KVPROXY_MAX_CONNS"] && (c.MaxConns < 16 || c.MaxConns > 1<<20) {
		add("KVPROXY_MAX_CONNS: %d must be between 16 and %d", c.MaxConns, 1<<20)
	}
	if !failed["KVPROXY_RETRY_MAX"] && (c.RetryMax < 0 || c.RetryMax > 10) {
		add("KVPROXY_RETRY_MAX: %d must be between 0 and 10", c.RetryMax)
	}
	c.validateService(add)
	if !failed["KVPROXY_CACHE_TTL"] && (c.CacheTTL < 0 || c.CacheTTL > 24*time.Hour) {
		add("KVPROXY_CACHE_TTL: %q must be between 0 (off) and 24h", c.CacheTTL.String())
	}
	if !failed["KVPROXY_CACHE_STALE_IF_ERROR"] && (c.CacheStaleIfError < 0 || c.CacheStaleIfError > 30*24*time.Hour) {
		add("KVPROXY_CACHE_STALE_IF_ERROR: %q must be between 0 and 720h", c.CacheStaleIfError.String())
	}
	if !failed["KVPROXY_CACHE_MAX_BYTES"] && (c.CacheMaxBytes < 64<<10 || c.CacheMaxBytes > 4<<30) {
		add("KVPROXY_CACHE_MAX_BYTES: %d must be between 65536 and 4294967296", c.CacheMaxBytes)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		add("KVPROXY_LOG_LEVEL: %v", err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		add("KVPROXY_LOG_FORMAT: %q is not json or text", c.LogFormat)
	}
	return p
}

// validateService checks the shared service's settings: TLS files come in
// pairs, and client authentication needs an https issuer and a policy.
func (c *Config) validateService(add func(string, ...any)) {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		add("KVPROXY_TLS_CERT_FILE, KVPROXY_TLS_KEY_FILE: set both or neither")
	}
	switch c.ClientAuth {
	case "none":
		for name, v := range map[string]string{"KVPROXY_CLIENT_AUTH_ISSUER": c.ClientAuthIssuer, "KVPROXY_ACCESS_POLICY_FILE": c.AccessPolicyFile} {
			if v != "" {
				add("%s: only used with KVPROXY_CLIENT_AUTH=kubernetes; set that too, or unset this", name)
			}
		}
	case "kubernetes":
		if u, err := url.Parse(c.ClientAuthIssuer); c.ClientAuthIssuer == "" || err != nil || u.Scheme != "https" || u.Host == "" {
			add("KVPROXY_CLIENT_AUTH_ISSUER: %q: want the cluster's https service-account issuer (e.g. https://kubernetes.default.svc.cluster.local)", c.ClientAuthIssuer)
		}
		if c.AccessPolicyFile == "" {
			add("KVPROXY_ACCESS_POLICY_FILE: required with KVPROXY_CLIENT_AUTH=kubernetes (without rules every request is denied)")
		}
		if c.ClientAuthAudience == "" {
			add("KVPROXY_CLIENT_AUTH_AUDIENCE: must not be empty")
		}
	default:
		add("KVPROXY_CLIENT_AUTH: %q is not none or kubernetes", c.ClientAuth)
	}
}

// maxBodyLimit is the largest KVPROXY_MAX_BODY_BYTES accepted.
const maxBodyLimit = 64 << 20

// validateVault checks KVPROXY_VAULT_URL and KVPROXY_TOKEN_SCOPE together:
// the token goes to the vault host, so the host must be a Key Vault or
// Managed HSM (or a stand-in on an IP address or localhost), and the scope
// one of the vault's cloud, unless KVPROXY_ALLOW_UNKNOWN_VAULT_HOST says
// otherwise.
func (c *Config) validateVault(add func(string, ...any)) {
	if c.TokenScope != "" {
		if err := kvwire.ValidateScope(c.TokenScope); err != nil {
			add("KVPROXY_TOKEN_SCOPE: %v", err)
			return
		}
	}
	if c.VaultURL == "" {
		add("KVPROXY_VAULT_URL: required (e.g. https://myvault.vault.azure.net)")
		return
	}
	u, err := ParseVaultURL(c.VaultURL)
	if err != nil {
		add("KVPROXY_VAULT_URL: %v", err)
		return
	}
	host := u.Hostname()
	svc, known := kvwire.LookupHost(host)
	local := kvwire.IsIP(host) || host == "localhost"
	switch {
	case known:
	case !local && !c.AllowUnknownVaultHost:
		add("KVPROXY_VAULT_URL: %q is not a Key Vault or Managed HSM host (%s): check it for a typo; for a private cloud set KVPROXY_ALLOW_UNKNOWN_VAULT_HOST=true and KVPROXY_TOKEN_SCOPE",
			host, knownSuffixes())
		return
	case c.TokenScope == "":
		add("KVPROXY_TOKEN_SCOPE: required because %q has no known Key Vault host suffix (e.g. https://vault.azure.net/.default)", host)
		return
	}
	if c.TokenScope == "" || c.AllowUnknownVaultHost {
		return
	}
	var allowed []string
	for _, s := range kvwire.Services() {
		if !known || s.Cloud == svc.Cloud {
			allowed = append(allowed, s.Scope)
		}
	}
	for _, s := range allowed {
		if strings.EqualFold(c.TokenScope, s) {
			return
		}
	}
	add("KVPROXY_TOKEN_SCOPE: %q is no Key Vault or Managed HSM scope of the vault's cloud (want one of %s): a token for another resource would be sent to the vault host; set KVPROXY_ALLOW_UNKNOWN_VAULT_HOST=true to allow it",
		c.TokenScope, strings.Join(allowed, ", "))
}

func knownSuffixes() string {
	var s []string
	for _, svc := range kvwire.Services() {
		s = append(s, "*"+svc.Suffix)
	}
	return strings.Join(s, ", ")
}

// Warnings lists the weakened defaults of a valid configuration, one line
// each, for kvproxy to log at WARN when it starts.
func (c *Config) Warnings() []string {
	var w []string
	if !c.RequireMetadataHeader {
		w = append(w, "KVPROXY_REQUIRE_METADATA_HEADER=false: requests without 'Metadata: true' are forwarded, so a server-side request forgery through the app can read secrets")
	}
	if _, ok := UnixSocketPath(c.ListenAddr); !ok {
		if host, _, err := net.SplitHostPort(c.ListenAddr); err == nil && !isLoopback(host) {
			w = append(w, fmt.Sprintf("KVPROXY_LISTEN_ADDR=%s is not a loopback address: anything that can reach it reads what the identity can read", c.ListenAddr))
		}
	}
	if c.AllowUnknownVaultHost {
		w = append(w, "KVPROXY_ALLOW_UNKNOWN_VAULT_HOST=true: the vault host and token scope are not checked against the known Key Vault and Managed HSM clouds")
	}
	return w
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseVaultURL checks a vault URL: https, a host, no user info, query or
// fragment, and no path beyond "/". It returns the URL with an empty path.
func ParseVaultURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	switch {
	case u.Scheme == "http":
		return nil, fmt.Errorf("%q uses http://; the token would cross the network in clear text, use https://", raw)
	case u.Scheme != "https":
		return nil, fmt.Errorf("%q must start with https://", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("%q must not carry user information", raw)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q must not carry a query or fragment", raw)
	case u.Path != "" && u.Path != "/":
		return nil, fmt.Errorf("%q must not carry a path; kvproxy forwards the client's path", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q has an invalid port", raw)
		}
	}
	return &url.URL{Scheme: "https", Host: strings.ToLower(u.Host)}, nil
}

// UnixSocketPath returns the socket path of a unix:// listen address.
func UnixSocketPath(addr string) (string, bool) {
	p, ok := strings.CutPrefix(addr, "unix://")
	return p, ok
}

func validateListen(addr string) error {
	if p, ok := UnixSocketPath(addr); ok {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%q: the socket path must be absolute (unix:///path/kvproxy.sock)", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	_ = host
	return nil
}

// ParseLogLevel maps KVPROXY_LOG_LEVEL to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// Scope returns the token scope: KVPROXY_TOKEN_SCOPE, or the one derived from
// the vault host. Call it only on a validated Config.
func (c *Config) Scope() (scope string, explicit bool) {
	if c.TokenScope != "" {
		return c.TokenScope, true
	}
	u, _ := ParseVaultURL(c.VaultURL)
	s, _ := kvwire.ScopeForVaultHost(u.Hostname())
	return s, false
}

// EffectiveCredential resolves KVPROXY_CREDENTIAL=auto to a concrete kind.
func (c *Config) EffectiveCredential() string {
	if c.Credential != CredentialAuto {
		return c.Credential
	}
	switch {
	case c.AzureFederatedTokenFile != "":
		return CredentialWorkloadIdentity
	case c.AzureClientSecret != "":
		return CredentialClientSecret
	default:
		return CredentialManagedIdentity
	}
}

// Variable describes one environment variable for help output and for tests
// (the Helm chart's tests derive the variable list from here).
type Variable struct {
	Name        string
	Default     string
	Description string
	// SDK is true for variables read by the Azure SDK rather than defined
	// by kvproxy.
	SDK bool
}

// Variables lists every variable in declaration order.
func Variables() []Variable {
	t := reflect.TypeFor[Config]()
	var out []Variable
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if d, ok := f.Tag.Lookup("desc"); ok {
			out = append(out, Variable{Name: name, Default: f.Tag.Get("envDefault"), Description: d})
		} else if d, ok := f.Tag.Lookup("sdk"); ok {
			out = append(out, Variable{Name: name, Description: d, SDK: true})
		}
	}
	return out
}

// KvproxyVariableNames returns the sorted KVPROXY_* variable names.
func KvproxyVariableNames() []string {
	var names []string
	for _, v := range Variables() {
		if !v.SDK {
			names = append(names, v.Name)
		}
	}
	sort.Strings(names)
	return names
}

// serviceLinkRe matches the variables Kubernetes sets in every pod of a
// namespace for a Service named kvproxy (enableServiceLinks):
// KVPROXY_SERVICE_HOST, KVPROXY_SERVICE_PORT[_<name>], KVPROXY_PORT and
// KVPROXY_PORT_<port>_<proto>[_PROTO|_PORT|_ADDR]. They are not settings.
var serviceLinkRe = regexp.MustCompile(`^KVPROXY_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$`)

// unknownVariables reports every KVPROXY_* variable of environ that kvproxy
// does not know, with the known one it most likely means: a typo of a
// security setting must stop kvproxy, not be ignored.
func unknownVariables(environ map[string]string) []string {
	known := KvproxyVariableNames()
	var out []string
	for k := range environ {
		if !strings.HasPrefix(k, "KVPROXY_") || slices.Contains(known, k) || serviceLinkRe.MatchString(k) {
			continue
		}
		line := k + ": unknown variable"
		if m := closest(k, known); m != "" {
			line += " (did you mean " + m + "?)"
		}
		out = append(out, line+"; kvproxy -h lists every variable")
	}
	sort.Strings(out)
	return out
}

// closest returns the name nearest to s by edit distance (underscores
// ignored, so READONLY finds READ_ONLY), or "" when none is near.
func closest(s string, names []string) string {
	norm := func(x string) string { return strings.ReplaceAll(strings.TrimPrefix(x, "KVPROXY_"), "_", "") }
	best, bestD := "", -1
	for _, n := range names {
		d := editDistance(norm(s), norm(n))
		if bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	if bestD < 0 || bestD > max(2, len(norm(s))/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
