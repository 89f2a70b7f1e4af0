package config

import (
	"errors"
	"maps"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Load(map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		VaultURL: "https://myvault.vault.azure.net", ListenAddr: "127.0.0.1:8380", AdminAddr: "127.0.0.1:8381",
		Credential: "auto", RefreshBefore: 5 * time.Minute, UpstreamTimeout: 30 * time.Second, APIVersion: "7.5",
		RequireMetadataHeader: true, MaxBodyBytes: 1048576, MaxBufferedBytes: 33554432, MaxConns: 4096, ShutdownTimeout: 20 * time.Second,
		RetryMax: 2, RetryMaxWait: 10 * time.Second, TokenRetryInterval: time.Second, ClientAuth: "none", ClientAuthAudience: "kvproxy", CacheStaleIfError: 24 * time.Hour, CacheMaxBytes: 16777216, LogLevel: "info", LogFormat: "json",
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *c, want)
	}
	if s, explicit := c.Scope(); s != "https://vault.azure.net/.default" || explicit {
		t.Errorf("scope %q explicit=%v", s, explicit)
	}
}

func TestInvalidConfigurationNamesEveryVariable(t *testing.T) {
	_, err := Load(map[string]string{
		"KVPROXY_VAULT_URL":               "http://myvault.vault.azure.net",
		"KVPROXY_UPSTREAM_TIMEOUT":        "soon",
		"KVPROXY_READ_ONLY":               "maybe",
		"KVPROXY_MAX_BODY_BYTES":          "lots",
		"KVPROXY_CREDENTIAL":              "password",
		"KVPROXY_LISTEN_ADDR":             "nonsense",
		"KVPROXY_REQUIRE_METADATA_HEADER": "yes please",
	})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`KVPROXY_UPSTREAM_TIMEOUT: "soon" is not a duration`,
		`KVPROXY_READ_ONLY: "maybe" is not a boolean`,
		`KVPROXY_MAX_BODY_BYTES: "lots" is not a whole number`,
		`KVPROXY_REQUIRE_METADATA_HEADER: "yes please" is not a boolean`,
		`KVPROXY_VAULT_URL: "http://myvault.vault.azure.net" uses http://`,
		`KVPROXY_CREDENTIAL: "password" is not one of`,
		`KVPROXY_LISTEN_ADDR: "nonsense" is not host:port`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if len(ce.Problems) != 7 {
		t.Errorf("%d problems, want 7 (one per bad variable):\n%s", len(ce.Problems), msg)
	}
}

func TestValidation(t *testing.T) {
	base := map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net"}
	tests := []struct {
		name string
		set  map[string]string
		want string // "" = valid
	}{
		{name: "vault required", set: map[string]string{"KVPROXY_VAULT_URL": ""}, want: "KVPROXY_VAULT_URL: required"},
		{name: "vault path", set: map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net/secrets"}, want: "must not carry a path"},
		{name: "vault query", set: map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net?x=1"}, want: "query"},
		{name: "vault userinfo", set: map[string]string{"KVPROXY_VAULT_URL": "https://u:p@myvault.vault.azure.net"}, want: "user information"},
		{name: "vault trailing slash ok", set: map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net/"}},
		{name: "unknown suffix refused", set: map[string]string{"KVPROXY_VAULT_URL": "https://vault.internal.example", "KVPROXY_TOKEN_SCOPE": "https://vault.azure.net/.default"}, want: "KVPROXY_VAULT_URL: \"vault.internal.example\" is not a Key Vault"},
		{name: "typo of the suffix refused", set: map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.com", "KVPROXY_TOKEN_SCOPE": "https://vault.azure.net/.default"}, want: "KVPROXY_VAULT_URL"},
		{name: "unknown suffix allowed needs scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://vault.internal.example", "KVPROXY_ALLOW_UNKNOWN_VAULT_HOST": "true"}, want: "KVPROXY_TOKEN_SCOPE: required"},
		{name: "unknown suffix allowed with scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://vault.internal.example", "KVPROXY_ALLOW_UNKNOWN_VAULT_HOST": "true", "KVPROXY_TOKEN_SCOPE": "https://vault.internal.example/.default"}},
		{name: "IP stand-in needs scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://127.0.0.1:8443"}, want: "KVPROXY_TOKEN_SCOPE: required"},
		{name: "IP stand-in with scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://127.0.0.1:8443", "KVPROXY_TOKEN_SCOPE": "https://vault.azure.net/.default"}},
		{name: "localhost stand-in with scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://localhost:8443", "KVPROXY_TOKEN_SCOPE": "https://managedhsm.azure.net/.default"}},
		{name: "management scope refused", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://management.azure.com/.default"}, want: "KVPROXY_TOKEN_SCOPE: \"https://management.azure.com/.default\" is no Key Vault"},
		{name: "other cloud's scope refused", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://vault.azure.cn/.default"}, want: "KVPROXY_TOKEN_SCOPE"},
		{name: "same cloud's HSM scope allowed", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://managedhsm.azure.net/.default"}},
		{name: "any scope with the opt-in", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://management.azure.com/.default", "KVPROXY_ALLOW_UNKNOWN_VAULT_HOST": "true"}},
		{name: "stand-in with management scope refused", set: map[string]string{"KVPROXY_VAULT_URL": "https://127.0.0.1:8443", "KVPROXY_TOKEN_SCOPE": "https://management.azure.com/.default"}, want: "KVPROXY_TOKEN_SCOPE"},
		{name: "zero body limit", set: map[string]string{"KVPROXY_MAX_BODY_BYTES": "0"}, want: "KVPROXY_MAX_BODY_BYTES: 0 must be between 1"},
		{name: "absurd body limit", set: map[string]string{"KVPROXY_MAX_BODY_BYTES": "1099511627776"}, want: "KVPROXY_MAX_BODY_BYTES"},
		{name: "refresh window longer than a token", set: map[string]string{"KVPROXY_REFRESH_BEFORE": "48h"}, want: "KVPROXY_REFRESH_BEFORE: \"48h0m0s\" is too long"},
		{name: "absurd upstream timeout", set: map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "3h"}, want: "KVPROXY_UPSTREAM_TIMEOUT"},
		{name: "tiny token retry interval", set: map[string]string{"KVPROXY_TOKEN_RETRY_INTERVAL": "1ms"}, want: "KVPROXY_TOKEN_RETRY_INTERVAL"},
		{name: "scope trailing slash", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://vault.azure.net//.default"}, want: "AKV10022"},
		{name: "scope without .default", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://vault.azure.net"}, want: "/.default"},
		{name: "negative refresh", set: map[string]string{"KVPROXY_REFRESH_BEFORE": "-1m"}, want: "KVPROXY_REFRESH_BEFORE"},
		{name: "zero timeout", set: map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "0s"}, want: "KVPROXY_UPSTREAM_TIMEOUT"},
		{name: "log level", set: map[string]string{"KVPROXY_LOG_LEVEL": "loud"}, want: "KVPROXY_LOG_LEVEL"},
		{name: "log format", set: map[string]string{"KVPROXY_LOG_FORMAT": "xml"}, want: "KVPROXY_LOG_FORMAT"},
		{name: "unix socket", set: map[string]string{"KVPROXY_LISTEN_ADDR": "unix:///run/kvproxy/kvproxy.sock"}},
		{name: "relative unix socket", set: map[string]string{"KVPROXY_LISTEN_ADDR": "unix://kvproxy.sock"}, want: "absolute"},
		{name: "admin on unix", set: map[string]string{"KVPROXY_ADMIN_ADDR": "unix:///run/kvproxy/admin.sock"}},
		{name: "admin on relative unix", set: map[string]string{"KVPROXY_ADMIN_ADDR": "unix://admin.sock"}, want: "KVPROXY_ADMIN_ADDR"},
		{name: "retry max range", set: map[string]string{"KVPROXY_RETRY_MAX": "50"}, want: "KVPROXY_RETRY_MAX"},
		{name: "api version injection", set: map[string]string{"KVPROXY_API_VERSION": "7.5&x=1"}, want: "KVPROXY_API_VERSION"},
		{name: "china", set: map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.cn"}},
		{name: "managed hsm", set: map[string]string{"KVPROXY_VAULT_URL": "https://h.managedhsm.azure.net"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkLoad(t, base, tt.set, tt.want) })
	}
}

func TestCredentialSelection(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, CredentialManagedIdentity},
		{map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"}, CredentialWorkloadIdentity},
		{map[string]string{"AZURE_CLIENT_SECRET": "s"}, CredentialClientSecret},
		{map[string]string{"AZURE_CLIENT_SECRET": "s", "AZURE_FEDERATED_TOKEN_FILE": "/f"}, CredentialWorkloadIdentity},
		{map[string]string{"KVPROXY_CREDENTIAL": "azure-cli", "AZURE_CLIENT_SECRET": "s"}, CredentialAzureCLI},
	}
	for _, tt := range tests {
		tt.env["KVPROXY_VAULT_URL"] = "https://v.vault.azure.net"
		c, err := Load(tt.env)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.EffectiveCredential(); got != tt.want {
			t.Errorf("%v: got %s, want %s", tt.env, got, tt.want)
		}
	}
}

func TestIdentityClientIDFallsBackToAzureClientID(t *testing.T) {
	c, _ := Load(map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.net", "AZURE_CLIENT_ID": "abc"})
	if c.IdentityClientID != "abc" {
		t.Errorf("got %q", c.IdentityClientID)
	}
	c, _ = Load(map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.net", "AZURE_CLIENT_ID": "abc", "KVPROXY_IDENTITY_CLIENT_ID": "def"})
	if c.IdentityClientID != "def" {
		t.Errorf("got %q", c.IdentityClientID)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, out := range []string{s.String(), string(must(s.MarshalText())), s.LogValue().String()} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret printed: %q", out)
		}
	}
}

func TestVariablesCoverEveryField(t *testing.T) {
	names := KvproxyVariableNames()
	if len(names) != 34 {
		t.Errorf("%d KVPROXY_ variables: %v", len(names), names)
	}
	for _, v := range Variables() {
		if v.Description == "" {
			t.Errorf("%s has no description", v.Name)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The README's configuration table must list every variable with its
// default, so documentation cannot drift from the struct.
func TestREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Variables() {
		row := "| `" + v.Name + "` |"
		i := strings.Index(string(readme), row)
		if i < 0 {
			t.Errorf("README has no table row for %s", v.Name)
			continue
		}
		line, _, _ := strings.Cut(string(readme[i:]), "\n")
		if v.Default != "" && !strings.Contains(line, "`"+v.Default+"`") {
			t.Errorf("README row for %s does not show its default %q: %s", v.Name, v.Default, line)
		}
	}
}

func TestUnknownVariables(t *testing.T) {
	_, err := Load(map[string]string{
		"KVPROXY_VAULT_URL":    "https://myvault.vault.azure.net",
		"KVPROXY_READONLY":     "true",
		"KVPROXY_LISTEN_ADR":   "0.0.0.0:8380",
		"KVPROXY_FROBNICATE":   "1",
		"KVPROXY_SERVICE_HOST": "10.0.0.1", // Kubernetes service links for a Service named kvproxy
		"KVPROXY_SERVICE_PORT": "8380", "KVPROXY_SERVICE_PORT_PROXY": "8380",
		"KVPROXY_PORT": "tcp://10.0.0.1:8380", "KVPROXY_PORT_8380_TCP": "tcp://10.0.0.1:8380",
		"KVPROXY_PORT_8380_TCP_PROTO": "tcp", "KVPROXY_PORT_8380_TCP_PORT": "8380", "KVPROXY_PORT_8380_TCP_ADDR": "10.0.0.1",
		"AZURE_SOMETHING": "not ours",
	})
	if err == nil {
		t.Fatal("unknown KVPROXY_ variables were accepted")
	}
	var ce *Error
	errors.As(err, &ce)
	want := []string{
		"KVPROXY_FROBNICATE: unknown variable; kvproxy -h lists every variable",
		"KVPROXY_LISTEN_ADR: unknown variable (did you mean KVPROXY_LISTEN_ADDR?); kvproxy -h lists every variable",
		"KVPROXY_READONLY: unknown variable (did you mean KVPROXY_READ_ONLY?); kvproxy -h lists every variable",
	}
	if strings.Join(ce.Problems, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(ce.Problems, "\n"), strings.Join(want, "\n"))
	}
}

// Parse errors and range errors of other variables come in one round.
func TestParseAndRangeErrorsTogether(t *testing.T) {
	_, err := Load(map[string]string{
		"KVPROXY_VAULT_URL":        "https://myvault.vault.azure.net",
		"KVPROXY_UPSTREAM_TIMEOUT": "soon",
		"KVPROXY_MAX_BODY_BYTES":   "0",
		"KVPROXY_REFRESH_BEFORE":   "-1s",
	})
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems in one round, got %v", err)
	}
	for _, p := range ce.Problems {
		if !strings.HasPrefix(p, "KVPROXY_") {
			t.Errorf("problem %q does not start with its variable", p)
		}
	}
}

func TestWarnings(t *testing.T) {
	c, err := Load(map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net"})
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("defaults warn: %v", w)
	}
	c, err = Load(map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net",
		"KVPROXY_REQUIRE_METADATA_HEADER": "false", "KVPROXY_LISTEN_ADDR": "0.0.0.0:8380"})
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"KVPROXY_REQUIRE_METADATA_HEADER=false", "KVPROXY_LISTEN_ADDR=0.0.0.0:8380 is not a loopback"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	for _, addr := range []string{"127.0.0.1:8380", "[::1]:8380", "localhost:8380", "unix:///run/k.sock"} {
		c, _ := Load(map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net", "KVPROXY_LISTEN_ADDR": addr})
		if w := c.Warnings(); len(w) != 0 {
			t.Errorf("%s warns: %v", addr, w)
		}
	}
}

func TestServiceSettings(t *testing.T) {
	base := map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.net"}
	tests := []struct {
		name string
		set  map[string]string
		want string
	}{
		{name: "kubernetes", set: map[string]string{"KVPROXY_CLIENT_AUTH": "kubernetes", "KVPROXY_CLIENT_AUTH_ISSUER": "https://kubernetes.default.svc.cluster.local", "KVPROXY_ACCESS_POLICY_FILE": "/etc/kvproxy/policy.yaml"}},
		{name: "kubernetes needs an issuer", set: map[string]string{"KVPROXY_CLIENT_AUTH": "kubernetes", "KVPROXY_ACCESS_POLICY_FILE": "/p"}, want: "KVPROXY_CLIENT_AUTH_ISSUER"},
		{name: "an http issuer", set: map[string]string{"KVPROXY_CLIENT_AUTH": "kubernetes", "KVPROXY_CLIENT_AUTH_ISSUER": "http://k", "KVPROXY_ACCESS_POLICY_FILE": "/p"}, want: "KVPROXY_CLIENT_AUTH_ISSUER"},
		{name: "kubernetes needs a policy", set: map[string]string{"KVPROXY_CLIENT_AUTH": "kubernetes", "KVPROXY_CLIENT_AUTH_ISSUER": "https://k"}, want: "KVPROXY_ACCESS_POLICY_FILE: required"},
		{name: "a policy without client auth", set: map[string]string{"KVPROXY_ACCESS_POLICY_FILE": "/p"}, want: "KVPROXY_ACCESS_POLICY_FILE: only used"},
		{name: "unknown client auth", set: map[string]string{"KVPROXY_CLIENT_AUTH": "mtls"}, want: `KVPROXY_CLIENT_AUTH: "mtls"`},
		{name: "a certificate without its key", set: map[string]string{"KVPROXY_TLS_CERT_FILE": "/c"}, want: "set both"},
		{name: "TLS", set: map[string]string{"KVPROXY_TLS_CERT_FILE": "/c", "KVPROXY_TLS_KEY_FILE": "/k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkLoad(t, base, tt.set, tt.want) })
	}
}

// checkLoad loads base with set over it: it must succeed when want is "",
// else fail with an error that mentions want.
func checkLoad(t *testing.T, base, set map[string]string, want string) {
	t.Helper()
	env := maps.Clone(base)
	maps.Copy(env, set)
	_, err := Load(env)
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("error %v, want it to mention %q", err, want)
	}
}
