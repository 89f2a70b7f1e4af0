package auth

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
)

// Kind is a kind of credential.
type Kind string

// Credential kinds (the values of KVPROXY_CREDENTIAL other than auto).
const (
	KindManagedIdentity  Kind = "managed-identity"
	KindWorkloadIdentity Kind = "workload-identity"
	KindClientSecret     Kind = "client-secret"
	KindAzureCLI         Kind = "azure-cli"
)

// Kinds lists every credential kind.
func Kinds() []Kind {
	return []Kind{KindManagedIdentity, KindWorkloadIdentity, KindClientSecret, KindAzureCLI}
}

// ParseKind returns the Kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown credential kind %q", s)
}

// TakesTenant reports whether the credential accepts a tenant per token
// request, so the vault's tenant learned from its challenge can be passed
// on (workload identity and client secret do; a managed identity lives in
// one tenant, and the Azure CLI uses its login's).
func (k Kind) TakesTenant() bool {
	return k == KindWorkloadIdentity || k == KindClientSecret
}

// CredentialOptions select and configure an azidentity credential.
type CredentialOptions struct {
	Kind          Kind
	ClientID      string // user-assigned identity / app registration
	TenantID      string // workload identity, client secret
	TokenFile     string // workload identity: the federated token file
	ClientSecret  string // client secret; never logged
	AuthorityHost string // https authority for workload identity / client secret ("" = public cloud or AZURE_AUTHORITY_HOST)
	// IdentityEndpoint is informational: managed identity reads
	// IDENTITY_ENDPOINT itself. It only names the source in Description.
	IdentityEndpoint string
	// ClientOptions go to the credential (tests set Transport here).
	ClientOptions azcore.ClientOptions
	// DisableInstanceDiscovery skips Entra's instance discovery (needed for
	// private or stand-in authorities).
	DisableInstanceDiscovery bool
}

// NewCredential builds the azidentity credential o asks for, and a
// description of it (for the start-up log) that holds no secret.
func NewCredential(o CredentialOptions) (azcore.TokenCredential, string, error) {
	co := o.ClientOptions
	if o.AuthorityHost != "" {
		co.Cloud.ActiveDirectoryAuthorityHost = o.AuthorityHost
	}
	switch o.Kind {
	case KindManagedIdentity:
		if source, err := managedidentity.GetSource(); err == nil && source == managedidentity.DefaultToIMDS && !retrySet(co.Retry) {
			co.Retry = imdsRetry
		}
		opts := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		desc := "managed identity (system-assigned"
		if o.ClientID != "" {
			opts.ID = azidentity.ClientID(o.ClientID)
			desc = "managed identity (user-assigned, client ID " + o.ClientID
		}
		if o.IdentityEndpoint != "" {
			desc += ", endpoint " + redactURL(o.IdentityEndpoint) + ")"
		} else {
			desc += ", IMDS)"
		}
		cred, err := azidentity.NewManagedIdentityCredential(opts)
		return cred, desc, err
	case KindWorkloadIdentity:
		if err := require("workload identity", []requirement{
			{o.ClientID, "a client ID: set AZURE_CLIENT_ID or KVPROXY_IDENTITY_CLIENT_ID"},
			{o.TenantID, "AZURE_TENANT_ID"},
			{o.TokenFile, "AZURE_FEDERATED_TOKEN_FILE"},
		}); err != nil {
			return nil, "", err
		}
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: co, ClientID: o.ClientID, TenantID: o.TenantID, TokenFilePath: o.TokenFile,
			DisableInstanceDiscovery: o.DisableInstanceDiscovery,
			// The vault's tenant, learned from its verified challenge, is
			// passed per request (as the Key Vault SDKs do).
			AdditionallyAllowedTenants: []string{"*"},
		})
		return cred, fmt.Sprintf("workload identity (tenant %s, client ID %s, token file %s)", o.TenantID, o.ClientID, o.TokenFile), err
	case KindClientSecret:
		if err := require("client-secret", []requirement{
			{o.ClientID, "AZURE_CLIENT_ID or KVPROXY_IDENTITY_CLIENT_ID"},
			{o.TenantID, "AZURE_TENANT_ID"},
			{o.ClientSecret, "AZURE_CLIENT_SECRET"},
		}); err != nil {
			return nil, "", err
		}
		cred, err := azidentity.NewClientSecretCredential(o.TenantID, o.ClientID, o.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: o.DisableInstanceDiscovery,
				AdditionallyAllowedTenants: []string{"*"}})
		return cred, fmt.Sprintf("client secret (tenant %s, client ID %s)", o.TenantID, o.ClientID), err
	case KindAzureCLI:
		opts := &azidentity.AzureCLICredentialOptions{TenantID: o.TenantID}
		cred, err := azidentity.NewAzureCLICredential(opts)
		return cred, "Azure CLI (az account get-access-token)", err
	}
	return nil, "", fmt.Errorf("unknown credential kind %q", o.Kind)
}

// imdsRetry is how one token fetch from IMDS retries, when the caller set
// no retry options. azidentity's own IMDS policy (6 retries from 2s up to
// 25s apart, a minute per try: over a minute in all, after IMDS's advice)
// suits a program that asks for one token and has nothing else to do. In
// kvproxy the fetch runs in the background while requests wait for it at
// most CacheOptions.MaxWait, and the Cache retries failed fetches itself:
// with backoff up to 30s, and as soon as a request needs a token once a
// second (RequestRetryInterval). A fetch that ends soon lets those retries
// notice a recovered IMDS within seconds and gets a request the real cause
// rather than a timeout. So: 3 tries about 0.5s and 1.5s apart (a failing
// fetch ends in about 2s), each cut after 10s, the latency IMDS's team
// gives as its bound (shorter per-try timeouts are known to fail on busy
// VMs). StatusCodes stays nil so that azidentity fills in IMDS's list
// (404, 410, 429 and 5xx); azidentity only fills zero fields.
var imdsRetry = policy.RetryOptions{
	MaxRetries:    2,
	RetryDelay:    500 * time.Millisecond,
	MaxRetryDelay: 2 * time.Second,
	TryTimeout:    10 * time.Second,
}

// retrySet reports whether r sets any retry option.
func retrySet(r policy.RetryOptions) bool {
	return r.MaxRetries != 0 || r.TryTimeout != 0 || r.RetryDelay != 0 || r.MaxRetryDelay != 0 ||
		r.StatusCodes != nil || r.ShouldRetry != nil
}

// requirement is a setting a credential needs: its value and what to set.
type requirement struct{ value, what string }

// require reports every empty requirement of a credential at once.
func require(credential string, reqs []requirement) error {
	var problems []error
	for _, r := range reqs {
		if r.value == "" {
			problems = append(problems, fmt.Errorf("%s needs %s", credential, r.what))
		}
	}
	return errors.Join(problems...)
}

// CheckTokenFile reports a missing or unreadable federated token file early,
// with the fix, instead of on the first token fetch.
func CheckTokenFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("AZURE_FEDERATED_TOKEN_FILE %s: %w (is the pod labelled azure.workload.identity/use: \"true\"?)", path, err)
	}
	f.Close()
	return nil
}

// redactURL drops what a URL may carry that is secret: its user
// information, query and fragment.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment, u.ForceQuery = nil, "", "", false
	return u.String()
}
