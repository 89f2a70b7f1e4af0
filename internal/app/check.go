package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/proxy"
)

// CheckReport is what `kvproxy check -o json` prints.
type CheckReport struct {
	OK         bool           `json:"ok"`
	Vault      string         `json:"vault"`
	Credential string         `json:"credential"`
	Scope      string         `json:"scope"`
	Steps      []CheckStep    `json:"steps"`
	Identity   *CheckIdentity `json:"identity,omitempty"`
}

// CheckIdentity is the identity a token was issued to (never the token).
type CheckIdentity struct {
	TenantID  string `json:"tid"`
	ObjectID  string `json:"oid"`
	AppID     string `json:"appid"`
	Audience  string `json:"aud"`
	ExpiresOn string `json:"expiresOn"`
}

// CheckStep is one check and its outcome.
type CheckStep struct {
	Name      string           `json:"name"`
	OK        bool             `json:"ok"`
	Summary   string           `json:"summary"`
	Diagnosis *proxy.Diagnosis `json:"diagnosis,omitempty"`
}

// runCheck acquires a token, discovers the vault's challenge and makes one
// harmless read (list secrets, maxresults=1). Exit 0 only if all is well.
func runCheck(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	fs, output, timeout := checkFlags()
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "kvproxy check: -o %q: want text or json\n", *output)
		return ExitUsage
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := Check(ctx, cfg, Deps{})
	if err != nil {
		return exitCode(err, stderr)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep) //nolint:errcheck
	} else {
		printCheck(stdout, rep)
	}
	if !rep.OK {
		return ExitFailed
	}
	return ExitOK
}

// Check runs the checks of `kvproxy check` and reports them. An error means
// the checks could not run at all (a bad credential configuration).
func Check(ctx context.Context, cfg *config.Config, d Deps) (*CheckReport, error) {
	vaultURL, err := config.ParseVaultURL(cfg.VaultURL)
	if err != nil {
		return nil, err
	}
	scope, explicit := cfg.Scope()
	kind := cfg.EffectiveCredential()
	cred, desc, err := auth.NewCredential(credentialOptions(cfg, kind, d))
	if err != nil {
		return nil, &config.Error{Problems: []string{"KVPROXY_CREDENTIAL=" + kind + ": " + err.Error()}}
	}
	rep := &CheckReport{Vault: vaultURL.String(), Credential: desc, Scope: scope, OK: true}
	fail := func(s CheckStep) { s.OK = false; rep.OK = false; rep.Steps = append(rep.Steps, s) }
	pass := func(s CheckStep) { s.OK = true; rep.Steps = append(rep.Steps, s) }
	client := &http.Client{
		Transport:     proxy.NewTransport(proxy.TransportOptions{RootCAs: d.RootCAs, ResponseHeaderTimeout: cfg.UpstreamTimeout}),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	// 1. The vault's challenge: reachable, and asking for a resource the
	//    vault host may ask for.
	disc := auth.NewDiscovery(vaultURL.Host, explicit)
	tenant := ""
	ch, err := auth.DiscoverChallenge(ctx, client, vaultURL, cfg.APIVersion)
	if err != nil {
		fail(CheckStep{Name: "challenge", Summary: err.Error()})
	} else if chScope, err := disc.Learn(ch); err != nil {
		fail(CheckStep{Name: "challenge", Summary: err.Error()})
	} else {
		tenant = ch.TenantID
		pass(CheckStep{Name: "challenge", Summary: fmt.Sprintf("vault tenant %s, challenge scope %s", orDash(ch.TenantID), chScope)})
	}

	// 2. A token from the configured identity.
	tro := policy.TokenRequestOptions{Scopes: []string{scope}}
	if kind == auth.KindWorkloadIdentity || kind == auth.KindClientSecret {
		tro.TenantID = tenant
	}
	tok, err := cred.GetToken(ctx, tro)
	if err != nil {
		te := auth.Describe(err)
		fail(CheckStep{Name: "token", Summary: te.Detail,
			Diagnosis: &proxy.Diagnosis{Code: proxy.DiagTokenUnavailable, Detail: te.Detail, Vault: vaultURL.Hostname()}})
		return rep, nil
	}
	info := inspect(tok.Token)
	rep.Identity = &CheckIdentity{TenantID: info.Identity.TenantID, ObjectID: info.Identity.ObjectID,
		AppID: info.Identity.AppID, Audience: info.Audience, ExpiresOn: tok.ExpiresOn.UTC().Format(time.RFC3339)}
	pass(CheckStep{Name: "token", Summary: fmt.Sprintf("token for %s, expires %s", orDash(info.Audience), tok.ExpiresOn.UTC().Format(time.RFC3339))})

	// 3. One harmless read.
	u := *vaultURL
	u.Path = "/secrets"
	u.RawQuery = "maxresults=1&api-version=" + url.QueryEscape(cfg.APIVersion)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := client.Do(req)
	if err != nil {
		fail(CheckStep{Name: "read", Summary: "listing secrets failed: " + err.Error(),
			Diagnosis: &proxy.Diagnosis{Code: proxy.DiagUpstreamUnavailable, Detail: err.Error(), Vault: vaultURL.Hostname()}})
		return rep, nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		pass(CheckStep{Name: "read", Summary: "listed secrets (maxresults=1): 200 OK"})
		return rep, nil
	}
	d0 := proxy.Diagnose(proxy.DiagnoseInput{
		Status: resp.StatusCode, Header: resp.Header, Body: body, Method: http.MethodGet, Path: "/secrets",
		Vault: vaultURL.Hostname(), Identity: info.Identity, TokenExpiresAt: info.ExpiresAt, TokenNotBefore: info.NotBefore,
		Scope: scope, VaultTenantID: tenant, Now: time.Now(),
	})
	summary := "listing secrets answered " + resp.Status
	if d0 != nil {
		summary += ": " + d0.Detail
	}
	fail(CheckStep{Name: "read", Summary: summary, Diagnosis: d0})
	return rep, nil
}

func printCheck(w io.Writer, rep *CheckReport) {
	fmt.Fprintf(w, "vault       %s\nidentity    %s\nscope       %s\n", rep.Vault, rep.Credential, rep.Scope)
	if id := rep.Identity; id != nil {
		fmt.Fprintf(w, "token       tid=%s oid=%s appid=%s aud=%s expires=%s\n", orDash(id.TenantID), orDash(id.ObjectID), orDash(id.AppID), orDash(id.Audience), id.ExpiresOn)
	}
	fmt.Fprintln(w)
	for _, s := range rep.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "[%s] %-9s %s\n", mark, s.Name, s.Summary)
		if d := s.Diagnosis; d != nil {
			fmt.Fprintf(w, "           diagnosis: %s\n", d.Code)
			if d.Fix != "" {
				fmt.Fprintf(w, "           fix: %s\n", d.Fix)
			}
		}
	}
	if rep.OK {
		fmt.Fprintln(w, "\nall checks passed")
	} else {
		fmt.Fprintln(w, "\nsome checks failed")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
