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
	if d == nil || len(body) > kvwire.MaxErrorBody || !json.Valid(body) {
		return body, false
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return body, false
	}
	var diag bytes.Buffer
	enc := json.NewEncoder(&diag)
	enc.SetEscapeHTML(false)
	if enc.Encode(d) != nil {
		return body, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return body, false
	}
	out := make([]byte, 0, len(body)+diag.Len()+16)
	out = append(out, '{')
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return body, false
		}
		key, ok := tok.(string)
		if !ok {
			return body, false
		}
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return body, false
		}
		if key == "kvproxy" {
			continue
		}
		k, err := json.Marshal(key)
		if err != nil {
			return body, false
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, k...)
		out = append(out, ':')
		out = append(out, raw...)
		n++
	}
	if n > 0 {
		out = append(out, ',')
	}
	out = append(out, `"kvproxy":`...)
	out = append(out, bytes.TrimRight(diag.Bytes(), "\n")...)
	out = append(out, '}')
	return out, true
}

// Character sets of values that may reach a detail or a fix.
