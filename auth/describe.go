package auth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Describe turns a credential error into a [TokenError] whose Detail a user
// can act on. Response bodies are summarised, never copied whole, and
// anything shaped like a token is redacted ([kvwire.Redact]). It gives
// managed identity advice for an unreachable endpoint; use
// [CredentialOptions.Describe] to get advice for the credential in use.
func Describe(err error) *TokenError {
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		return describeResponse(afe.RawResponse, err)
	}
	// azidentity often flattens the cause into its message
	// (AuthenticationFailedError without a response), so the error chain
	// is checked first and the text second.
	text := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(text, "context deadline exceeded") || strings.Contains(text, "i/o timeout"):
		return &TokenError{Reason: ReasonTimeout, Err: err,
			Detail: "the identity endpoint did not answer in time; check that it is reachable from this pod or machine"}
	case errors.Is(err, fs.ErrNotExist) || strings.Contains(text, "no token file specified") ||
		(strings.Contains(text, "WorkloadIdentityCredential") && strings.Contains(text, "no such file or directory")):
		return &TokenError{Reason: ReasonTokenFile, Err: err,
			Detail: "the federated token file (AZURE_FEDERATED_TOKEN_FILE) is missing: label the pod azure.workload.identity/use=\"true\" and annotate its service account with azure.workload.identity/client-id"}
	case isConnError(err) || connText(text) != "":
		return &TokenError{Reason: ReasonUnreachable, Err: err,
			Detail: "the identity endpoint is unreachable (" + connSummary(err) + "): on Azure check that a managed identity is enabled and that no network policy blocks 169.254.169.254; elsewhere set IDENTITY_ENDPOINT or use workload identity"}
	}
	msg := firstLine(redactURLSecrets(kvwire.Redact(err.Error())))
	reason := ReasonCredentialErr
	if strings.Contains(msg, "unavailable") || strings.Contains(msg, "no managed identity") {
		reason = ReasonUnavailable
	}
	return &TokenError{Reason: reason, Err: err, Detail: "the credential failed: " + msg}
}

func describeResponse(resp *http.Response, err error) *TokenError {
	endpoint := "the identity endpoint"
	if resp.Request != nil && resp.Request.URL != nil {
		u := resp.Request.URL
		endpoint = u.Scheme + "://" + u.Host + u.Path
	}
	summary := summarizeBody(resp)
	te := &TokenError{Reason: ReasonRejected, Err: err}
	switch {
	case resp.StatusCode == http.StatusBadRequest && (strings.Contains(summary, "Identity not found") ||
		strings.Contains(summary, "No User Assigned") || strings.Contains(summary, "identity not found")):
		te.Reason = ReasonNotAssigned
		te.Detail = endpoint + " answered 400: the managed identity is not assigned to this resource (" + summary + "); assign it, or fix KVPROXY_IDENTITY_CLIENT_ID"
		return te
	case strings.Contains(summary, "AADSTS700213") || strings.Contains(summary, "AADSTS70021"):
		te.Detail = endpoint + " rejected the workload identity (" + summary + "): add a federated credential for this service account's issuer and subject to the identity"
		return te
	case strings.Contains(summary, "AADSTS7000215"):
		te.Detail = endpoint + " rejected the client secret (" + summary + "): the secret is wrong or expired"
		return te
	case strings.Contains(summary, "AADSTS90002"):
		te.Detail = endpoint + " does not know the tenant (" + summary + "): check AZURE_TENANT_ID"
		return te
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		te.Reason = ReasonUnavailable
	}
	te.Detail = endpoint + " answered " + resp.Status
	if summary != "" {
		te.Detail += ": " + summary
	}
	return te
}

// summarizeBody extracts the error code and first line of the description
// from an identity endpoint's JSON error body.
func summarizeBody(resp *http.Response) string {
	body, err := runtime.Payload(resp)
	if err != nil || len(body) == 0 {
		return ""
	}
	var v struct {
		Error       any    `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	if json.Unmarshal(body, &v) != nil {
		return truncate(firstLine(kvwire.Redact(string(body))), 200)
	}
	var parts []string
	switch e := v.Error.(type) {
	case string:
		parts = append(parts, e)
	case map[string]any:
		if code, ok := e["code"].(string); ok {
			parts = append(parts, code)
		}
		if m, ok := e["message"].(string); ok {
			parts = append(parts, m)
		}
	}
	if v.Description != "" {
		parts = append(parts, v.Description)
	}
	if v.Message != "" {
		parts = append(parts, v.Message)
	}
	return truncate(firstLine(kvwire.Redact(strings.Join(parts, ": "))), 300)
}

func isConnError(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// connText recognises a connection failure in an error's text.
func connText(text string) string {
	for _, s := range []string{"connection refused", "no route to host", "network is unreachable", "no such host", "connection reset by peer"} {
		if strings.Contains(text, s) {
			return s
		}
	}
	return ""
}

func connSummary(err error) string {
	if s := connText(err.Error()); s != "" && !isConnError(err) {
		return s
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "DNS lookup of " + dns.Name + " failed"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	return "network error"
}

// urlSecretRe matches the parts of a URL in a message that may be secret:
// user information and a query or fragment.
var urlSecretRe = regexp.MustCompile(`(https?://)(?:[^/\s@"']*@)?([^\s?#"']*)[?#][^\s"']*`)

// redactURLSecrets drops user information, queries and fragments from the
// URLs in s (an IDENTITY_ENDPOINT may carry a secret in either).
func redactURLSecrets(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlSecretRe.ReplaceAllString(s, "$1$2")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Describe is [Describe] with advice for the credential o configures: for
// workload identity and client secret, an unreachable endpoint is the
// authority (AZURE_AUTHORITY_HOST), and the detail names what was tried:
// the authority host, the client and tenant IDs and, for workload identity,
// the federated token file and whether it exists and holds a token.
func (o CredentialOptions) Describe(err error) *TokenError {
	te := Describe(err)
	if o.Kind != KindWorkloadIdentity && o.Kind != KindClientSecret {
		return te
	}
	var tried []string
	tried = append(tried, "authority "+cmp.Or(redactURL(o.AuthorityHost), "https://login.microsoftonline.com/ (AZURE_AUTHORITY_HOST unset)"))
	tried = append(tried, "client ID "+cmp.Or(o.ClientID, "(none)"), "tenant "+cmp.Or(o.TenantID, "(none)"))
	if o.Kind == KindWorkloadIdentity {
		tried = append(tried, "token file "+o.TokenFile+": "+tokenFileState(o.TokenFile))
	}
	what := " (tried: " + strings.Join(tried, "; ") + ")"
	switch te.Reason {
	case ReasonUnreachable, ReasonTimeout:
		te = &TokenError{Reason: te.Reason, Err: te.Err,
			Detail: "Microsoft Entra ID is unreachable or slow" + what + ": check AZURE_AUTHORITY_HOST, DNS and the egress firewall (the authority host must be reachable over HTTPS)"}
	default:
		te = &TokenError{Reason: te.Reason, Err: te.Err, Detail: te.Detail + what}
	}
	return te
}

// tokenFileState says whether a federated token file exists and holds a
// token, naming its expiry (never its content).
func tokenFileState(path string) string {
	if path == "" {
		return "not set (AZURE_FEDERATED_TOKEN_FILE)"
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	case err != nil:
		return "unreadable (" + firstLine(err.Error()) + ")"
	case len(strings.TrimSpace(string(b))) == 0:
		return "empty"
	}
	c, err := kvwire.ParseClaims(string(b))
	if err != nil {
		return "not a token (" + err.Error() + ")"
	}
	if !c.ExpiresAt.IsZero() && !c.ExpiresAt.After(time.Now()) {
		return "expired at " + c.ExpiresAt.Format(time.RFC3339) + " (the kubelet refreshes it; is it still mounted?)"
	}
	return "present, issuer " + cmp.Or(c.Issuer, "(none)")
}
