package config

import (
	"errors"
	"os"
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
		RequireMetadataHeader: true, MaxBodyBytes: 1048576, ShutdownTimeout: 20 * time.Second,
		RetryMax: 2, RetryMaxWait: 10 * time.Second, TokenRetryInterval: time.Second, LogLevel: "info", LogFormat: "json",
	}
	if *c != want {
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
		{name: "unknown suffix needs scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://vault.internal.example"}, want: "KVPROXY_TOKEN_SCOPE: required"},
		{name: "unknown suffix with scope", set: map[string]string{"KVPROXY_VAULT_URL": "https://vault.internal.example", "KVPROXY_TOKEN_SCOPE": "https://vault.azure.net/.default"}},
		{name: "scope trailing slash", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://vault.azure.net//.default"}, want: "AKV10022"},
		{name: "scope without .default", set: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://vault.azure.net"}, want: "/.default"},
		{name: "negative refresh", set: map[string]string{"KVPROXY_REFRESH_BEFORE": "-1m"}, want: "KVPROXY_REFRESH_BEFORE"},
		{name: "zero timeout", set: map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "0s"}, want: "KVPROXY_UPSTREAM_TIMEOUT"},
		{name: "log level", set: map[string]string{"KVPROXY_LOG_LEVEL": "loud"}, want: "KVPROXY_LOG_LEVEL"},
		{name: "log format", set: map[string]string{"KVPROXY_LOG_FORMAT": "xml"}, want: "KVPROXY_LOG_FORMAT"},
		{name: "unix socket", set: map[string]string{"KVPROXY_LISTEN_ADDR": "unix:///run/kvproxy/kvproxy.sock"}},
		{name: "relative unix socket", set: map[string]string{"KVPROXY_LISTEN_ADDR": "unix://kvproxy.sock"}, want: "absolute"},
		{name: "admin on unix refused", set: map[string]string{"KVPROXY_ADMIN_ADDR": "unix:///tmp/a.sock"}, want: "KVPROXY_ADMIN_ADDR"},
		{name: "retry max range", set: map[string]string{"KVPROXY_RETRY_MAX": "50"}, want: "KVPROXY_RETRY_MAX"},
		{name: "api version injection", set: map[string]string{"KVPROXY_API_VERSION": "7.5&x=1"}, want: "KVPROXY_API_VERSION"},
		{name: "china", set: map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.cn"}},
		{name: "managed hsm", set: map[string]string{"KVPROXY_VAULT_URL": "https://h.managedhsm.azure.net"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.set {
				env[k] = v
			}
			_, err := Load(env)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
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
	if len(names) != 19 {
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
