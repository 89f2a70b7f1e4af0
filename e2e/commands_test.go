package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
)

// TestDevCommand runs the playground as a user would and tries what its
// banner suggests.
func TestDevCommand(t *testing.T) {
	t.Parallel()
	env := baseEnv()
	env["KVPROXY_LISTEN_ADDR"] = "127.0.0.1:0"
	env["KVPROXY_ADMIN_ADDR"] = "127.0.0.1:0"
	env["KVPROXY_LOG_FORMAT"] = "json"
	p := launch(t, env, "dev")
	p.waitStarted(t)
	p.waitReady(t, 20*time.Second)

	if got := decodeSecret(t, p.get(t, "/secrets/db-password")).Value; got != seededValue {
		t.Errorf("db-password = %q, want %q", got, seededValue)
	}
	h := md()
	h.Set("Content-Type", "application/json")
	decodeSecret(t, p.do(t, http.MethodPut, "/secrets/my-secret", h, strings.NewReader(`{"value":"s3cret"}`)))
	if got := decodeSecret(t, p.get(t, "/secrets/my-secret")).Value; got != "s3cret" {
		t.Errorf("my-secret = %q after PUT", got)
	}
	checkRefusal(t, p.do(t, http.MethodGet, "/secrets/db-password", nil, nil), http.StatusBadRequest, "metadata-header-missing")

	for _, tc := range []struct {
		name   string
		status int
		diag   string
	}{
		{azfake.SecretForbiddenFirewall, 403, "forbidden-by-firewall"},
		{azfake.SecretForbiddenPrivateLink, 403, "forbidden-by-private-link"},
		{azfake.SecretForbiddenRBAC, 403, "forbidden-by-rbac"},
		{azfake.SecretForbiddenPolicy, 403, "forbidden-by-access-policy"},
		{azfake.SecretForbiddenDisabled, 403, "forbidden"},
		{azfake.SecretUnauthorizedTenant, 401, "tenant-mismatch"},
		{azfake.SecretUnauthorizedAudience, 401, "audience-mismatch"},
		{azfake.SecretUnauthorizedExpired, 401, "token-expired"},
		{azfake.SecretUnauthorizedRejected, 401, "token-rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := p.get(t, "/secrets/"+tc.name)
			e := checkRefusal(t, r, tc.status, tc.diag)
			if e.Kvproxy.Identity.ObjectID == "" || e.Kvproxy.RequestID == "" {
				t.Errorf("diagnosis without identity or request id: %s", r.Body)
			}
		})
	}
	t.Run("throttled", func(t *testing.T) {
		if r := p.get(t, "/secrets/"+azfake.SecretThrottled); r.Status != http.StatusTooManyRequests {
			t.Errorf("throttled: %d, want 429", r.Status)
		}
	})

	out := p.stdout.String()
	for _, w := range []string{"kvproxy dev: a local playground", "http://" + p.Listen, p.Admin, "unauthorized-rejected"} {
		if !strings.Contains(out, w) {
			t.Errorf("banner lacks %q:\n%s", w, out)
		}
	}
	p.signal(t, syscall.SIGTERM)
	if code, ok := p.wait(10 * time.Second); !ok || code != 0 {
		t.Errorf("after SIGTERM: exited %v code %d, want 0", ok, code)
	}
}

// checkReport is what `kvproxy check -o json` prints.
type checkReport struct {
	OK       bool   `json:"ok"`
	Vault    string `json:"vault"`
	Scope    string `json:"scope"`
	Identity *struct {
		TenantID string `json:"tid"`
		ObjectID string `json:"oid"`
		AppID    string `json:"appid"`
		Audience string `json:"aud"`
	} `json:"identity"`
	Steps []struct {
		Name      string     `json:"name"`
		OK        bool       `json:"ok"`
		Summary   string     `json:"summary"`
		Diagnosis *diagnosis `json:"diagnosis"`
	} `json:"steps"`
}

// runCheck runs `kvproxy check args...` against f and returns its exit code
// and output.
func runCheck(t *testing.T, f *fakes, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := launch(t, f.env(nil), append([]string{"check"}, args...)...)
	code, ok := p.wait(60 * time.Second)
	if !ok {
		t.Fatal("kvproxy check did not finish")
	}
	return code, p.stdout.String(), p.stderr.String()
}

func parseReport(t *testing.T, stdout string) checkReport {
	t.Helper()
	var rep checkReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("check -o json output: %v\n%s", err, stdout)
	}
	return rep
}

// TestCheckCommand runs `kvproxy check` against healthy and broken set-ups.
func TestCheckCommand(t *testing.T) {
	t.Parallel()

	t.Run("healthy text", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		code, out, errOut := runCheck(t, f)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		for _, w := range []string{"tid=" + azfake.DefaultTenantID, "oid=" + azfake.DefaultObjectID, "appid=" + azfake.DefaultAppID, "all checks passed"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		reqs := tokenRequests(f.Vault)
		if len(reqs) != 1 || reqs[0].Path != "/secrets" || !strings.Contains(reqs[0].RawQuery, "maxresults=1") {
			t.Fatalf("the vault received %+v, want one list of maxresults=1", reqs)
		}
		if strings.Contains(out+errOut, reqs[0].Token) || strings.Contains(out+errOut, "eyJ") {
			t.Errorf("check printed the token:\n%s%s", out, errOut)
		}
	})

	t.Run("healthy json", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		code, out, errOut := runCheck(t, f, "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		rep := parseReport(t, out)
		if !rep.OK {
			t.Errorf("ok=false: %s", out)
		}
		var names []string
		for _, s := range rep.Steps {
			names = append(names, s.Name)
			if !s.OK {
				t.Errorf("step %s failed: %s", s.Name, s.Summary)
			}
		}
		if strings.Join(names, ",") != "challenge,token,read" {
			t.Errorf("steps %v, want challenge, token, read", names)
		}
		if id := rep.Identity; id == nil || id.TenantID != azfake.DefaultTenantID || id.ObjectID != azfake.DefaultObjectID || id.AppID != azfake.DefaultAppID || id.Audience != "https://vault.azure.net" {
			t.Errorf("identity %+v", rep.Identity)
		}
		for _, r := range tokenRequests(f.Vault) {
			if strings.Contains(out+errOut, r.Token) {
				t.Error("check printed the token")
			}
		}
	})

	t.Run("vault of another tenant", func(t *testing.T) {
		t.Parallel()
		// The vault's challenge names ForeignTenantID and it refuses tokens
		// of any other tenant with 401 AKV10032.
		f := newFakes(t, azfake.VaultOptions{TenantID: azfake.ForeignTenantID}, azfake.IdentityOptions{})
		code, out, errOut := runCheck(t, f, "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		rep := parseReport(t, out)
		if rep.OK {
			t.Error("ok=true against a vault of another tenant")
		}
		var read *diagnosis
		for _, s := range rep.Steps {
			if s.Name == "read" && !s.OK {
				read = s.Diagnosis
			}
		}
		if read == nil {
			t.Fatalf("no failed read step with a diagnosis: %s", out)
		}
		if read.Diagnosis != "tenant-mismatch" || read.ExpectedTenant != azfake.ForeignTenantID || read.ActualTenant != azfake.DefaultTenantID {
			t.Errorf("diagnosis %s expected %s actual %s; want tenant-mismatch, vault tenant %s, token tenant %s",
				read.Diagnosis, read.ExpectedTenant, read.ActualTenant, azfake.ForeignTenantID, azfake.DefaultTenantID)
		}
		code, text, _ := runCheck(t, f)
		if code != 1 || !strings.Contains(text, "diagnosis: tenant-mismatch") || !strings.Contains(text, "some checks failed") {
			t.Errorf("text output (exit %d) does not show the diagnosis:\n%s", code, text)
		}
	})

	t.Run("identity endpoint down", func(t *testing.T) {
		t.Parallel()
		f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
		f.IDs.Faults.SetDown(true)
		code, out, errOut := runCheck(t, f, "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		rep := parseReport(t, out)
		var tok *diagnosis
		for _, s := range rep.Steps {
			if s.Name == "token" && !s.OK {
				tok = s.Diagnosis
			}
		}
		if rep.OK || tok == nil || tok.Diagnosis != "token-unavailable" || !strings.Contains(tok.Detail, "500") {
			t.Errorf("want a failed token step diagnosed token-unavailable naming the 500: %s", out)
		}
		if len(tokenRequests(f.Vault)) != 0 {
			t.Error("the vault received a token request without a token")
		}
	})
}
