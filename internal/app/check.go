package app

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kvwire"
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
	Name      string              `json:"name"`
	OK        bool                `json:"ok"`
	Summary   string              `json:"summary"`
	Diagnosis *diagnose.Diagnosis `json:"diagnosis,omitempty"`
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
	cfg, err := config.Load(environ)
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

// Check runs the checks of `kvproxy check` and reports them, with the same
// parts `kvproxy run` builds. An error means the checks could not run at all
// (a bad credential configuration).
func Check(ctx context.Context, cfg *config.Config, d Deps) (*CheckReport, error) {
	pt, err := build(cfg, d)
	if err != nil {
		return nil, err
	}
	rep := &CheckReport{Vault: pt.vault.String(), Credential: pt.credDesc, Scope: pt.scope, OK: true}
	fail := func(s CheckStep) { s.OK = false; rep.OK = false; rep.Steps = append(rep.Steps, s) }
	pass := func(s CheckStep) { s.OK = true; rep.Steps = append(rep.Steps, s) }
	host := pt.vault.Hostname()

	// 1. The vault's challenge: reachable, and asking for a resource the
	//    vault host may ask for.
	challenges := pt.challenges(nil, nil)
	if chScope, err := pt.discover(ctx, challenges, cfg.APIVersion); err != nil {
		fail(CheckStep{Name: "challenge", Summary: err.Error()})
	} else {
		pass(CheckStep{Name: "challenge", Summary: fmt.Sprintf("vault tenant %s, challenge scope %s", cmp.Or(challenges.Tenant(), "-"), chScope)})
	}
	tenant := challenges.Tenant()

	// 2. For workload identity, the federated token file.
	if pt.kind == auth.KindWorkloadIdentity {
		if err := auth.CheckTokenFile(cfg.AzureFederatedTokenFile); err != nil {
			fail(CheckStep{Name: "tokenfile", Summary: err.Error()})
		} else {
			pass(CheckStep{Name: "tokenfile", Summary: cfg.AzureFederatedTokenFile + " is readable"})
		}
	}

	// 3. A token from the configured identity.
	tro := policy.TokenRequestOptions{Scopes: []string{pt.scope}}
	if pt.kind.TakesTenant() {
		tro.TenantID = tenant
	}
	tok, err := pt.cred.GetToken(ctx, tro)
	if err != nil {
		te := pt.credOpts.Describe(err)
		fail(CheckStep{Name: "token", Summary: te.Detail,
			Diagnosis: &diagnose.Diagnosis{Code: diagnose.TokenUnavailable, Detail: te.Detail, Vault: host}})
		return rep, nil
	}
	claims, _ := kvwire.ParseClaims(tok.Token)
	rep.Identity = &CheckIdentity{TenantID: claims.TenantID, ObjectID: claims.ObjectID,
		AppID: claims.AppID, Audience: claims.Audience, ExpiresOn: tok.ExpiresOn.UTC().Format(time.RFC3339)}
	pass(CheckStep{Name: "token", Summary: fmt.Sprintf("token for %s, expires %s", cmp.Or(claims.Audience, "-"), tok.ExpiresOn.UTC().Format(time.RFC3339))})

	// 4. One harmless read.
	u := *pt.vault
	u.Path = "/secrets"
	u.RawQuery = "maxresults=1&api-version=" + url.QueryEscape(cfg.APIVersion)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := pt.client().Do(req)
	if err != nil {
		detail := kvwire.RedactToken(err.Error(), tok.Token)
		fail(CheckStep{Name: "read", Summary: "listing secrets failed: " + detail,
			Diagnosis: &diagnose.Diagnosis{Code: diagnose.UpstreamUnavailable, Detail: detail, Vault: host}})
		return rep, nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, kvwire.MaxErrorBody))
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		pass(CheckStep{Name: "read", Summary: "listed secrets (maxresults=1): 200 OK"})
		return rep, nil
	}
	in := diagnose.Input{
		Status: resp.StatusCode, Body: body, NetworkInfo: resp.Header.Get("x-ms-keyvault-network-info"),
		RequestID: resp.Header.Get("x-ms-request-id"), Method: http.MethodGet, Path: "/secrets",
		Vault: host, Token: claims, Scope: pt.scope, VaultTenantID: tenant, Now: time.Now(),
	}
	if v := resp.Header.Values("WWW-Authenticate"); len(v) > 0 {
		in.Challenge, _ = kvwire.ParseChallenge(strings.Join(v, ", "))
	}
	d0 := diagnose.Diagnose(in)
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
		fmt.Fprintf(w, "token       tid=%s oid=%s appid=%s aud=%s expires=%s\n", cmp.Or(id.TenantID, "-"), cmp.Or(id.ObjectID, "-"), cmp.Or(id.AppID, "-"), cmp.Or(id.Audience, "-"), id.ExpiresOn)
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
