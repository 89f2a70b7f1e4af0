package kvwire

import "strings"

// ParseNetworkInfo reads Key Vault's x-ms-keyvault-network-info header
// ("conn_type=Ipv4;addr=1.2.3.4;act_addr_fam=InterNetwork;"): the address
// the vault saw the request come from. Keys are lower-cased. It tolerates
// junk: empty or key-less entries are skipped, the first value of a repeated
// key counts, and at most 32 entries of a value up to 4 KiB are read. The
// map is never nil.
func ParseNetworkInfo(v string) map[string]string {
	out := map[string]string{}
	if len(v) > 4<<10 {
		v = v[:4<<10]
	}
	for i, part := range strings.Split(v, ";") {
		if i >= 32 {
			break
		}
		k, val, ok := strings.Cut(part, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		if _, seen := out[k]; !seen {
			out[k] = strings.TrimSpace(val)
		}
	}
	return out
}
