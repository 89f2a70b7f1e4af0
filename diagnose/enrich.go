package diagnose

import (
	"bytes"
	"encoding/json"

	"github.com/kvproxy/kvproxy/kvwire"
)

// EnrichBody returns body with a top-level "kvproxy" member holding d, and
// true. Every other member keeps its key and its value byte for byte (the
// values are copied, keys re-encoded), in order; an existing "kvproxy"
// member is replaced. When body is not a JSON object, is over 1 MiB, or d is
// nil, it returns body unchanged and false: the caller then relies on the
// X-Kvproxy-Diagnosis header. The caller updates Content-Length.
func EnrichBody(body []byte, d *Diagnosis) ([]byte, bool) {
	if d == nil || len(body) > kvwire.MaxErrorBody {
		return body, false
	}
	members, ok := kvwire.ObjectMembers(body)
	if !ok {
		return body, false
	}
	var diag bytes.Buffer
	enc := json.NewEncoder(&diag)
	enc.SetEscapeHTML(false)
	if enc.Encode(d) != nil {
		return body, false
	}
	kept := members[:0]
	for _, m := range members {
		if m.Key != "kvproxy" {
			kept = append(kept, m)
		}
	}
	kept = append(kept, kvwire.Member{Key: "kvproxy", Value: bytes.TrimRight(diag.Bytes(), "\n")})
	return kvwire.AppendObject(make([]byte, 0, len(body)+diag.Len()+16), kept), true
}

// Character sets of values that may reach a detail or a fix.
