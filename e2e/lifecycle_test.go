package e2e

import (
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
	"github.com/kvproxy/kvproxy/internal/config"
)

type slowResult struct {
	r   response
	err error
}

// startSlowRequest sends GET db-password in the background and waits until
// the vault has it.
func startSlowRequest(t *testing.T, f *fakes, p *proc) <-chan slowResult {
	t.Helper()
	done := make(chan slowResult, 1)
	go func() {
		r, err := p.try(http.MethodGet, "/secrets/db-password", md(), nil)
		done <- slowResult{r, err}
	}()
	azfaketest.Eventually(t, 10*time.Second, "the slow request to reach the vault", func() (bool, string) {
		n := len(tokenRequests(f.Vault))
		return n == 1, "vault requests: " + strconv.Itoa(n)
	})
	return done
}

// TestGracefulDrain: on SIGTERM readiness turns 503, the request in flight
// completes, and the process exits 0; with a short drain deadline it exits
// promptly anyway.
func TestGracefulDrain(t *testing.T) {
	t.Parallel()

	t.Run("in-flight request completes", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_SHUTDOWN_TIMEOUT": "20s"})
		p.waitReady(t, 20*time.Second)
		f.Vault.Faults.SetLatency(1500 * time.Millisecond)
		done := startSlowRequest(t, f, p)

		sent := time.Now()
		p.signal(t, syscall.SIGTERM)
		azfaketest.Eventually(t, time.Second, "/readyz to answer 503 draining", func() (bool, string) {
			r, err := p.adminGet("/readyz")
			if err != nil {
				return false, err.Error()
			}
			return r.Status == http.StatusServiceUnavailable && strings.Contains(string(r.Body), "draining"), string(r.Body)
		})
		select {
		case <-done:
			t.Fatal("the in-flight request ended before readiness turned 503; the drain was not observed")
		default:
		}
		if v := metric(p.metricsOf(t), "kvproxy_ready", nil); v != 0 {
			t.Errorf("kvproxy_ready = %v while draining", v)
		}

		var res slowResult
		select {
		case res = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("the in-flight request did not complete")
		}
		if res.err != nil {
			t.Fatalf("the in-flight request failed: %v", res.err)
		}
		if got := decodeSecret(t, res.r).Value; got != seededValue {
			t.Errorf("value %q", got)
		}
		code, ok := p.wait(20 * time.Second)
		if !ok {
			t.Fatal("kvproxy did not exit within the drain timeout")
		}
		if code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		if took := time.Since(sent); took > 10*time.Second {
			t.Errorf("exit took %v after SIGTERM with one 1.5s request in flight", took)
		}
		var drained, stopped bool
		for _, l := range p.logLines() {
			drained = drained || l.Msg() == "draining"
			stopped = stopped || l.Msg() == "stopped"
		}
		if !drained || !stopped {
			t.Errorf("log lacks draining (%v) or stopped (%v)", drained, stopped)
		}
	})

	t.Run("drain deadline", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_SHUTDOWN_TIMEOUT": "300ms"})
		p.waitReady(t, 20*time.Second)
		f.Vault.Faults.SetLatency(5 * time.Second)
		done := startSlowRequest(t, f, p)

		sent := time.Now()
		p.signal(t, syscall.SIGTERM)
		code, ok := p.wait(10 * time.Second)
		took := time.Since(sent)
		if !ok {
			t.Fatal("kvproxy did not exit within 10s of SIGTERM with a 300ms drain timeout")
		}
		if code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		// 300ms of drain, then at most a second for the admin listener.
		if took > 3*time.Second {
			t.Errorf("exit took %v with KVPROXY_SHUTDOWN_TIMEOUT=300ms", took)
		}
		select {
		case res := <-done:
			if res.err == nil && res.r.Status == http.StatusOK {
				t.Errorf("a request the vault answers after 5s completed 200 within a 300ms drain")
			}
		case <-time.After(10 * time.Second):
			t.Error("the cut-off request did not end")
		}
	})

	t.Run("SIGTERM before the first token", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		release := f.IDs.Faults.Hold() // the start-up fetch never completes
		t.Cleanup(release)
		p := startKV(t, f, nil)
		azfaketest.Eventually(t, 10*time.Second, "the token request to be held", func() (bool, string) {
			return f.IDs.Faults.Waiting() == 1, strconv.Itoa(f.IDs.Faults.Waiting())
		})
		p.signal(t, syscall.SIGTERM)
		if code, ok := p.wait(5 * time.Second); !ok || code != 0 {
			t.Errorf("after SIGTERM with a token fetch in flight: exited %v, code %d; want a prompt exit 0", ok, code)
		}
	})

	t.Run("SIGINT when idle", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, nil)
		p.waitReady(t, 20*time.Second)
		p.signal(t, syscall.SIGINT)
		code, ok := p.wait(5 * time.Second)
		if !ok || code != 0 {
			t.Errorf("after SIGINT: exited %v, code %d; want a prompt exit 0", ok, code)
		}
	})
}

// TestUnixSocketListener serves the proxy on a unix socket that replaces a
// stale socket file, with mode 0660.
func TestUnixSocketListener(t *testing.T) {
	t.Parallel()
	// A short directory: socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "kvp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	t.Run("stale socket replaced", func(t *testing.T) {
		sock := filepath.Join(dir, "kvproxy.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != fs.ModeSocket {
			t.Fatalf("precondition: no stale socket at %s: %v", sock, err)
		}

		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := startKV(t, f, map[string]string{"KVPROXY_LISTEN_ADDR": "unix://" + sock})
		if p.Listen != "unix://"+sock {
			t.Errorf("start-up line listen=%q, want unix://%s", p.Listen, sock)
		}
		p.waitReady(t, 20*time.Second)
		if got := decodeSecret(t, p.get(t, "/secrets/db-password")).Value; got != seededValue {
			t.Errorf("value %q", got)
		}
		checkRefusal(t, p.do(t, http.MethodGet, "/secrets/db-password", nil, nil), http.StatusBadRequest, "metadata-header-missing")
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, want a socket with permissions 0660", fi.Mode())
		}
		// A second instance on the live socket exits naming it; the first
		// keeps serving.
		f2 := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		second := launch(t, f2.env(map[string]string{"KVPROXY_LISTEN_ADDR": "unix://" + sock}))
		if code, ok := second.wait(20 * time.Second); !ok || code == 0 {
			t.Errorf("a second instance on a live socket: exit %v code %d, want non-zero", ok, code)
		}
		if s := second.stderr.String(); !strings.Contains(s, sock) {
			t.Errorf("the second instance does not name the socket:\n%s", s)
		}
		if got := decodeSecret(t, p.get(t, "/secrets/db-password")).Value; got != seededValue {
			t.Errorf("the first instance stopped serving: %q", got)
		}
		p.signal(t, syscall.SIGTERM)
		if code, ok := p.wait(10 * time.Second); !ok || code != 0 {
			t.Fatalf("exit %v code %d", ok, code)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the socket file is left behind after a clean exit: %v", err)
		}
	})

	t.Run("regular file is not replaced", func(t *testing.T) {
		path := filepath.Join(dir, "not-a-socket")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		p := launch(t, f.env(map[string]string{"KVPROXY_LISTEN_ADDR": "unix://" + path}))
		code, ok := p.wait(20 * time.Second)
		if !ok || code != 1 {
			t.Errorf("exit %v code %d, want 1", ok, code)
		}
		if s := p.stderr.String(); !strings.Contains(s, "KVPROXY_LISTEN_ADDR") || !strings.Contains(s, "not a socket") {
			t.Errorf("stderr does not explain the refusal:\n%s", s)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
			t.Errorf("the regular file was changed: %q %v", b, err)
		}
	})
}

// TestConfigErrors: invalid configuration exits 2 before listening and
// names every problem with its variable.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	valid := map[string]string{
		"KVPROXY_VAULT_URL":   "https://myvault.vault.azure.net",
		"KVPROXY_LISTEN_ADDR": "127.0.0.1:0",
		"KVPROXY_ADMIN_ADDR":  "127.0.0.1:0",
		"KVPROXY_CREDENTIAL":  "managed-identity",
		"IDENTITY_ENDPOINT":   "http://127.0.0.1:1/msi/token",
		"IDENTITY_HEADER":     identityHeader,
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })

	tests := []struct {
		name string
		env  map[string]string // over valid; "" deletes
		args []string
		code int
		want []string // each must appear in stderr
	}{
		{name: "duration", env: map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "soon"}, code: 2,
			want: []string{`KVPROXY_UPSTREAM_TIMEOUT: "soon" is not a duration`}},
		{name: "http vault", env: map[string]string{"KVPROXY_VAULT_URL": "http://x.vault.azure.net"}, code: 2,
			want: []string{`KVPROXY_VAULT_URL: "http://x.vault.azure.net" uses http://`}},
		{name: "boolean", env: map[string]string{"KVPROXY_READ_ONLY": "maybe"}, code: 2,
			want: []string{`KVPROXY_READ_ONLY: "maybe" is not a boolean`}},
		{name: "every problem at once", code: 2,
			env:  map[string]string{"KVPROXY_UPSTREAM_TIMEOUT": "soon", "KVPROXY_VAULT_URL": "http://x.vault.azure.net", "KVPROXY_READ_ONLY": "maybe"},
			want: []string{`KVPROXY_UPSTREAM_TIMEOUT: "soon" is not a duration`, `KVPROXY_VAULT_URL: "http://x.vault.azure.net" uses http://`, `KVPROXY_READ_ONLY: "maybe" is not a boolean`}},
		{name: "no vault", env: map[string]string{"KVPROXY_VAULT_URL": ""}, code: 2,
			want: []string{"KVPROXY_VAULT_URL: required"}},
		{name: "vault with a path", env: map[string]string{"KVPROXY_VAULT_URL": "https://x.vault.azure.net/secrets"}, code: 2,
			want: []string{"KVPROXY_VAULT_URL:"}},
		{name: "scope needed for an unknown host", env: map[string]string{"KVPROXY_VAULT_URL": "https://127.0.0.1:8443"}, code: 2,
			want: []string{"KVPROXY_TOKEN_SCOPE: required"}},
		{name: "credential", env: map[string]string{"KVPROXY_CREDENTIAL": "magic"}, code: 2,
			want: []string{`KVPROXY_CREDENTIAL: "magic" is not one of`}},
		{name: "retry max", env: map[string]string{"KVPROXY_RETRY_MAX": "11"}, code: 2,
			want: []string{"KVPROXY_RETRY_MAX: 11 must be between 0 and 10"}},
		{name: "body limit", env: map[string]string{"KVPROXY_MAX_BODY_BYTES": "lots"}, code: 2,
			want: []string{`KVPROXY_MAX_BODY_BYTES: "lots" is not a whole number`}},
		{name: "zero shutdown timeout", env: map[string]string{"KVPROXY_SHUTDOWN_TIMEOUT": "0s"}, code: 2,
			want: []string{"KVPROXY_SHUTDOWN_TIMEOUT:", "greater than zero"}},
		{name: "log level", env: map[string]string{"KVPROXY_LOG_LEVEL": "loud"}, code: 2,
			want: []string{`KVPROXY_LOG_LEVEL: "loud"`}},
		{name: "typo of a security flag", env: map[string]string{"KVPROXY_READONLY": "true"}, code: 2,
			want: []string{"KVPROXY_READONLY: unknown variable (did you mean KVPROXY_READ_ONLY?)"}},
		{name: "unknown vault host", env: map[string]string{"KVPROXY_VAULT_URL": "https://myvault.vault.azure.com", "KVPROXY_TOKEN_SCOPE": "https://vault.azure.net/.default"}, code: 2,
			want: []string{"KVPROXY_VAULT_URL:", "not a Key Vault or Managed HSM host"}},
		{name: "management scope", env: map[string]string{"KVPROXY_TOKEN_SCOPE": "https://management.azure.com/.default"}, code: 2,
			want: []string{"KVPROXY_TOKEN_SCOPE:", "no Key Vault or Managed HSM scope"}},
		{name: "workload identity without its variables", env: map[string]string{"KVPROXY_CREDENTIAL": "workload-identity"}, code: 2,
			want: []string{"KVPROXY_CREDENTIAL=workload-identity", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"}},
		{name: "unknown command", args: []string{"serve"}, code: 2, want: []string{`unknown command "serve"`}},
		{name: "arguments to run", args: []string{"run", "--port=1"}, code: 2, want: []string{"unexpected arguments"}},
		{name: "check output format", args: []string{"check", "-o", "yaml"}, code: 2, want: []string{"-o"}},
		{name: "arguments to dev", args: []string{"dev", "extra"}, code: 2, want: []string{"kvproxy dev takes no arguments"}},
		{name: "listen address in use", env: map[string]string{"KVPROXY_LISTEN_ADDR": busy.Addr().String()}, code: 1,
			want: []string{"KVPROXY_LISTEN_ADDR:", "address already in use"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv()
			for k, v := range valid {
				env[k] = v
			}
			for k, v := range tc.env {
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			p := launch(t, env, tc.args...)
			code, ok := p.wait(15 * time.Second)
			if !ok {
				t.Fatal("kvproxy did not exit")
			}
			stderr := p.stderr.String()
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "kvproxy started") {
				t.Errorf("kvproxy started listening with an invalid configuration:\n%s", stderr)
			}
		})
	}
}

// TestHelpAndVersion: -h lists every KVPROXY_ variable; version prints the
// version, commit and Go version.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	names := config.KvproxyVariableNames()
	if len(names) < 10 {
		t.Fatalf("config.KvproxyVariableNames() = %v", names)
	}
	for _, arg := range []string{"-h", "--help", "help"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			p := launch(t, baseEnv(), arg)
			code, ok := p.wait(10 * time.Second)
			if !ok || code != 0 {
				t.Fatalf("exit %v code %d; stderr %s", ok, code, p.stderr.String())
			}
			out := p.stdout.String()
			listed := map[string]bool{}
			for _, n := range regexp.MustCompile(`KVPROXY_[A-Z_]+`).FindAllString(out, -1) {
				listed[n] = true
			}
			for _, n := range names {
				if !regexp.MustCompile(`(?m)^\s+` + n + `\s`).MatchString(out) {
					t.Errorf("help has no line for %s", n)
				}
				delete(listed, n)
			}
			for n := range listed {
				t.Errorf("help names %s, which is not a configuration variable", n)
			}
			for _, cmd := range []string{"kvproxy dev", "kvproxy check", "kvproxy version"} {
				if !strings.Contains(out, cmd) {
					t.Errorf("help does not mention %q", cmd)
				}
			}
		})
	}
	for _, arg := range []string{"version", "--version"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			p := launch(t, baseEnv(), arg)
			code, ok := p.wait(10 * time.Second)
			if !ok || code != 0 {
				t.Fatalf("exit %v code %d; stderr %s", ok, code, p.stderr.String())
			}
			m := regexp.MustCompile(`^kvproxy (\S+) \(commit (\S+), (go\S+)\)\n$`).FindStringSubmatch(p.stdout.String())
			if m == nil {
				t.Fatalf("version output %q, want \"kvproxy <version> (commit <commit>, <go version>)\"", p.stdout.String())
			}
			if m[3] != runtime.Version() {
				t.Errorf("Go version %q, want %q (the toolchain that built it)", m[3], runtime.Version())
			}
		})
	}
}
