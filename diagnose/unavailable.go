package diagnose

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/kvproxy/kvproxy/kvwire"
)

// unavailable explains a 429 or 5xx the vault answered and kvproxy passes
// on after its retries (KVPROXY_RETRY_MAX): the request is not at fault.
func unavailable(d *Diagnosis, in Input) {
	who, service := "the vault", "Key Vault"
	if kvwire.IsManagedHSM(in.Vault) {
		who, service = "the Managed HSM", "Key Vault Managed HSM"
	}
	answered := fmt.Sprintf("%s answered %d %s", who, in.Status, http.StatusText(in.Status))
	if d.VaultCode != "" {
		answered += " (" + d.VaultCode + ")"
	}
	if in.Retries > 0 {
		again := " again after"
		if in.FirstStatus != 0 && in.FirstStatus != in.Status {
			again = fmt.Sprintf(" (its first answer was %d) after", in.FirstStatus)
		}
		if in.Retries == 1 {
			answered += again + " kvproxy sent the request once more"
		} else {
			answered += again + fmt.Sprintf(" kvproxy sent the request %d more times", in.Retries)
		}
	}
	if in.Status == http.StatusTooManyRequests {
		d.Code = VaultThrottled
		d.Detail = answered + ": " + who + " is throttling. " + service + " limits transactions per 10 s by operation type " +
			"(about 4,000 secret reads per vault, far fewer operations with HSM-protected keys), shared by every client of it. "
		if strings.HasPrefix(in.Path, "/secrets") && !kvwire.IsManagedHSM(in.Vault) {
			d.Detail += "Turn on kvproxy's secret cache (KVPROXY_CACHE_TTL) so reads stop costing transactions, and spread reads out; "
		} else {
			d.Detail += "Spread the operations out or over more vaults (kvproxy's secret cache, KVPROXY_CACHE_TTL, helps only reads of secrets); "
		}
		d.Detail += "back off before retrying, honouring Retry-After when it is sent"
		return
	}
	d.Code = VaultUnavailable
	d.Detail = answered + ": the service failed this request, not the request itself. Retry with a backoff; " +
		"if it persists, check Azure's service health for " + service + " in its region and quote x-ms-request-id to Azure support"
	if in.Status == http.StatusServiceUnavailable || in.Status == http.StatusGatewayTimeout {
		d.Detail += "; a write that got this may or may not have been carried out: read the item before sending it again"
	}
}
