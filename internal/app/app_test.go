package app

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/config"
)

func TestMainDispatch(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		env    []string
		code   int
		stdout []string
		stderr []string
	}{
		{name: "help lists every variable", args: []string{"-h"}, code: ExitOK, stdout: config.KvproxyVariableNames()},
		{name: "version", args: []string{"version"}, code: ExitOK, stdout: []string{"kvproxy ", "commit ", "go1."}},
		{name: "unknown command", args: []string{"serve"}, code: ExitUsage, stderr: []string{`unknown command "serve"`}},
		{name: "stray arguments", args: []string{"run", "--port=1"}, code: ExitUsage, stderr: []string{"environment variables"}},
		{name: "missing vault", code: ExitUsage, stderr: []string{"KVPROXY_VAULT_URL: required"}},
		{name: "every problem at once", env: []string{"KVPROXY_VAULT_URL=http://v.vault.azure.net", "KVPROXY_UPSTREAM_TIMEOUT=soon"}, code: ExitUsage,
			stderr: []string{"KVPROXY_VAULT_URL:", `KVPROXY_UPSTREAM_TIMEOUT: "soon" is not a duration`}},
		{name: "typo of a security flag", env: []string{"KVPROXY_VAULT_URL=https://v.vault.azure.net", "KVPROXY_READONLY=true"}, code: ExitUsage,
			stderr: []string{"KVPROXY_READONLY: unknown variable (did you mean KVPROXY_READ_ONLY?)"}},
		{name: "unknown vault host", env: []string{"KVPROXY_VAULT_URL=https://myvault.vault.azure.com", "KVPROXY_TOKEN_SCOPE=https://vault.azure.net/.default"}, code: ExitUsage,
			stderr: []string{"KVPROXY_VAULT_URL:", "not a Key Vault or Managed HSM host"}},
		{name: "management scope", env: []string{"KVPROXY_VAULT_URL=https://v.vault.azure.net", "KVPROXY_TOKEN_SCOPE=https://management.azure.com/.default"}, code: ExitUsage,
			stderr: []string{"KVPROXY_TOKEN_SCOPE:", "no Key Vault or Managed HSM scope"}},
		{name: "check with bad output flag", args: []string{"check", "-o", "yaml"}, code: ExitUsage, stderr: []string{"want text or json"}},
		{name: "workload identity without its variables", env: []string{"KVPROXY_VAULT_URL=https://v.vault.azure.net", "KVPROXY_CREDENTIAL=workload-identity", "KVPROXY_LISTEN_ADDR=127.0.0.1:0", "KVPROXY_ADMIN_ADDR=127.0.0.1:0"},
			code: ExitUsage, stderr: []string{"AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(tt.args, tt.env, &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errOut.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
		})
	}
}

func TestLoggerRedactsTokens(t *testing.T) {
	tok := azfake.MintToken(azfake.TokenClaims{TenantID: "t"})
	var buf bytes.Buffer
	l := newLogger(&buf, "debug", "json")
	l.Info("something", slog.String("authorization", "Bearer "+tok), slog.String("note", "got "+tok+" back"),
		slog.String("AZURE_CLIENT_SECRET", string(config.Secret("hunter2"))), slog.Any("secret", config.Secret("hunter2")))
	out := buf.String()
	if strings.Contains(out, tok[:30]) || strings.Contains(out, "hunter2") {
		t.Fatalf("credential in log: %s", out)
	}
	if !strings.Contains(out, "[REDACTED]") {
		t.Fatalf("nothing redacted: %s", out)
	}
}
