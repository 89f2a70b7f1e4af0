package kvwire

import (
	"bytes"
	"encoding/json"
)

// Member is one member of a JSON object: its key and its value's bytes as
// they stand in the document.
type Member struct {
	Key   string
	Value json.RawMessage
}

// ObjectMembers returns the members of the JSON object b in order, each
// value byte for byte; false when b is not exactly one JSON object. kvproxy
// uses it to add its diagnosis to the vault's error body and to rewrite a
// list's nextLink without touching anything else the vault wrote.
func ObjectMembers(b []byte) ([]Member, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []Member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, ok := tok.(string)
		if !ok {
			return nil, false
		}
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return nil, false
		}
		out = append(out, Member{key, raw})
	}
	return out, true
}

// AppendObject appends the JSON object of members to dst: keys encoded
// again, values copied as they are.
func AppendObject(dst []byte, members []Member) []byte {
	dst = append(dst, '{')
	for i, m := range members {
		if i > 0 {
			dst = append(dst, ',')
		}
		k, _ := json.Marshal(m.Key) // a string always encodes
		dst = append(dst, k...)
		dst = append(dst, ':')
		dst = append(dst, m.Value...)
	}
	return append(dst, '}')
}
