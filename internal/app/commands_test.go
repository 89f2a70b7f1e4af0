package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/internal/version"
)

func TestHelpListsSubcommandsAndFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"-h"}, nil, &out, &errOut); code != ExitOK {
		t.Fatalf("kvproxy -h: exit %d\n%s", code, errOut.String())
	}
	for _, want := range []string{"kvproxy [run]", "kvproxy dev", "kvproxy check [flags]", "-timeout duration", "-o format", "kvproxy version [flags]", "kvproxy help"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("kvproxy -h lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSubcommandHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "check -h", args: []string{"check", "-h"}, want: []string{"kvproxy check", "-timeout", "-o format"}},
		{name: "check --help", args: []string{"check", "--help"}, want: []string{"-timeout"}},
		{name: "dev -h", args: []string{"dev", "-h"}, want: []string{"kvproxy dev", "KVPROXY_VAULT_URL"}},
		{name: "version -h", args: []string{"version", "-h"}, want: []string{"kvproxy version", "-o format"}},
		{name: "run -h", args: []string{"run", "-h"}, want: []string{"KVPROXY_LISTEN_ADDR", "kvproxy check"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Main(tt.args, nil, &out, &errOut); code != ExitOK {
				t.Fatalf("exit %d, want 0\nstderr: %s", code, errOut.String())
			}
			if errOut.Len() != 0 {
				t.Errorf("help wrote to stderr: %s", errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := Main([]string{"check", "-bogus"}, nil, &out, &errOut); code != ExitUsage || !strings.Contains(errOut.String(), "-bogus") {
		t.Errorf("check -bogus: exit %d, stderr %q; want 2 naming the flag", code, errOut.String())
	}
}

func TestVersion(t *testing.T) {
	t.Cleanup(func() { version.Version, version.Commit, version.Date = "", "", "" })
	version.Version, version.Commit, version.Date = "v9.8.7", "abc123", "2026-11-22T10:00:00Z"
	for _, args := range [][]string{{"version"}, {"-v"}, {"--version"}} {
		var out, errOut bytes.Buffer
		if code := Main(args, nil, &out, &errOut); code != ExitOK {
			t.Fatalf("%q: exit %d: %s", args, code, errOut.String())
		}
		re := regexp.MustCompile(`^kvproxy v9\.8\.7 \(commit abc123, go\S+, built 2026-11-22T10:00:00Z\)\n$`)
		if !re.MatchString(out.String()) {
			t.Errorf("%q printed %q", args, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := Main([]string{"version", "-o", "json"}, nil, &out, &errOut); code != ExitOK {
		t.Fatalf("version -o json: exit %d: %s", code, errOut.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out.String())
	}
	for k, want := range map[string]string{"version": "v9.8.7", "commit": "abc123", "buildDate": "2026-11-22T10:00:00Z"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if !strings.HasPrefix(got["goVersion"], "go") || !strings.Contains(got["platform"], "/") {
		t.Errorf("goVersion %q platform %q", got["goVersion"], got["platform"])
	}
	if code := Main([]string{"version", "-o", "yaml"}, nil, &out, &errOut); code != ExitUsage {
		t.Errorf("version -o yaml: exit %d, want 2", code)
	}
}

func TestJSONLogDurations(t *testing.T) {
	var buf bytes.Buffer
	l := newLogger(&buf, "info", "json")
	l.Info("started", slog.Duration("refreshBefore", 5*time.Minute), slog.Group("g", slog.Duration("timeout", 1500*time.Millisecond)))
	var got struct {
		RefreshBefore string `json:"refreshBefore"`
		G             struct {
			Timeout string `json:"timeout"`
		} `json:"g"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if got.RefreshBefore != "5m0s" || got.G.Timeout != "1.5s" {
		t.Errorf("durations logged as %q and %q, want \"5m0s\" and \"1.5s\": %s", got.RefreshBefore, got.G.Timeout, buf.String())
	}
}

func TestLoadConfigAdminAddr(t *testing.T) {
	base := map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.net"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name      string
		env       map[string]string
		wantAdmin string
		wantErr   []string
	}{
		{name: "tcp", env: with("KVPROXY_ADMIN_ADDR", "127.0.0.1:9"), wantAdmin: "127.0.0.1:9"},
		{name: "ipv6 loopback", env: with("KVPROXY_ADMIN_ADDR", "[::1]:9", "KVPROXY_LISTEN_ADDR", "[::1]:8"), wantAdmin: "[::1]:9"},
		{name: "unix socket", env: with("KVPROXY_ADMIN_ADDR", "unix:///run/kvproxy/admin.sock"), wantAdmin: "unix:///run/kvproxy/admin.sock"},
		{name: "relative socket", env: with("KVPROXY_ADMIN_ADDR", "unix://admin.sock"), wantErr: []string{"KVPROXY_ADMIN_ADDR:", "absolute"}},
		{name: "same socket as the proxy", env: with("KVPROXY_ADMIN_ADDR", "unix:///run/k.sock", "KVPROXY_LISTEN_ADDR", "unix:///run/k.sock"),
			wantErr: []string{"KVPROXY_ADMIN_ADDR:", "own socket"}},
		{name: "other problems still reported", env: map[string]string{"KVPROXY_ADMIN_ADDR": "unix://x", "KVPROXY_LOG_LEVEL": "loud"},
			wantErr: []string{"KVPROXY_VAULT_URL: required", "KVPROXY_LOG_LEVEL", "KVPROXY_ADMIN_ADDR:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load(tt.env)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; admin %q", cfg.AdminAddr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AdminAddr != tt.wantAdmin {
				t.Errorf("AdminAddr %q, want %q", cfg.AdminAddr, tt.wantAdmin)
			}
		})
	}
}

// TestListeners runs the playground with the admin listener on a unix
// socket and the proxy on [::1], then with both on [::1].
func TestListeners(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		ln.Close()
	}
	sock := filepath.Join(t.TempDir(), "admin.sock")
	tests := []struct {
		name, listen, admin string
	}{
		{name: "unix admin, ipv6 proxy", listen: "[::1]:0", admin: "unix://" + sock},
		{name: "both ipv6", listen: "[::1]:0", admin: "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxyURL, adminClient, adminBase := startDev(t, map[string]string{"KVPROXY_LISTEN_ADDR": tt.listen, "KVPROXY_ADMIN_ADDR": tt.admin})
			if !strings.HasPrefix(proxyURL, "http://[::1]:") {
				t.Errorf("proxy listens on %s, want [::1]", proxyURL)
			}
			waitReady(t, adminClient, adminBase)
			req, _ := http.NewRequest(http.MethodGet, proxyURL+"/secrets/db-password", nil)
			req.Header.Set("Metadata", "true")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "correct-horse-battery-staple") {
				t.Errorf("GET over [::1]: %d %s", resp.StatusCode, body)
			}
			resp, err = adminClient.Get(adminBase + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "kvproxy_ready 1") {
				t.Errorf("GET /metrics on %s: %d", tt.admin, resp.StatusCode)
			}
		})
	}
}

// startDev runs `kvproxy dev` with env until the test ends, and returns the
// proxy's base URL and a client and base URL for the admin listener.
func startDev(t *testing.T, env map[string]string) (proxyURL string, admin *http.Client, adminBase string) {
	t.Helper()
	// runDev sets these for azidentity; t.Setenv restores them.
	t.Setenv("IDENTITY_ENDPOINT", "")
	t.Setenv("IDENTITY_HEADER", "")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, nil, env, pw, io.Discard); pw.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kvproxy dev: %v", err)
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(20 * time.Second)
	var adminAddr string
	for proxyURL == "" || adminAddr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("kvproxy dev ended before printing its banner")
			}
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "proxy" {
				proxyURL = f[1]
			}
			if len(f) >= 2 && f[0] == "admin" {
				adminAddr = f[1]
			}
		case <-deadline:
			t.Fatal("no banner from kvproxy dev in 20s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	if p, ok := strings.CutPrefix(adminAddr, "unix://"); ok {
		dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p)
		}
		return proxyURL, &http.Client{Transport: &http.Transport{DialContext: dial}}, "http://kvproxy"
	}
	return proxyURL, http.DefaultClient, adminAddr
}

func waitReady(t *testing.T, c *http.Client, base string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := c.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("kvproxy never became ready")
}
