package kvwire

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
)

// MaxErrorBody bounds the error body [ParseVaultError] reads. Key Vault's
// error bodies are a few hundred bytes.
const MaxErrorBody = 1 << 20

// maxMessage bounds [VaultError.Text]: Key Vault's messages are a few
// hundred bytes, and the patterns that read them need not scan a megabyte.
const maxMessage = 16 << 10

// VaultError is what was read of a Key Vault or Managed HSM error body,
// {"error":{"code","message","innererror":{"code"}}}.
type VaultError struct {
	Code      string // error.code, e.g. Forbidden, Unauthorized, AccessDenied
	InnerCode string // error.innererror.code, e.g. ForbiddenByRbac; often absent
	Message   string // error.message
	// JSON is true when the body was a whole JSON error object.
	JSON bool
	// Raw is the body's text (at most 4 KiB) when it held no code and no
	// message: an HTML page of a gateway, plain text, or nothing.
	Raw string
}

// Text is the message, or the body's text when it held no message, cut to
// 16 KiB.
func (e VaultError) Text() string {
	s := e.Message
	if s == "" {
		s = e.Raw
	}
	if len(s) > maxMessage {
		s = s[:maxMessage]
	}
	return s
}

// Is reports whether code (case-insensitive) is the inner or the outer code.
func (e VaultError) Is(code string) bool {
	return strings.EqualFold(e.InnerCode, code) || strings.EqualFold(e.Code, code)
}

var (
	errCodeRe    = regexp.MustCompile(`"code"\s*:\s*"((?:[^"\\]|\\.){0,200})"`)
	errInnerRe   = regexp.MustCompile(`(?i)"inner_?error"\s*:\s*\{\s*"code"\s*:\s*"((?:[^"\\]|\\.){0,200})"`)
	errMessageRe = regexp.MustCompile(`"message"\s*:\s*"((?:[^"\\]|\\.)*)`)
)

// ParseVaultError reads a vault's error body, tolerating what real answers
// hold: a missing innererror, members of unexpected types, a body that does
// not parse (truncated by a proxy, or cut at [MaxErrorBody]) — searched then
// for its code, inner code and message — and a body with none of them
// (kept as text). It never fails.
func ParseVaultError(body []byte) VaultError {
	if len(body) > MaxErrorBody {
		body = body[:MaxErrorBody]
	}
	var v struct {
		Error *struct {
			Code       any `json:"code"`
			Message    any `json:"message"`
			InnerError *struct {
				Code any `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && v.Error != nil {
		e := VaultError{JSON: true, Code: anyString(v.Error.Code), Message: anyString(v.Error.Message)}
		if v.Error.InnerError != nil {
			e.InnerCode = anyString(v.Error.InnerError.Code)
		}
		return e
	}
	var e VaultError
	if m := errInnerRe.FindSubmatch(body); m != nil {
		e.InnerCode = unescapeJSON(m[1])
	}
	if m := errCodeRe.FindSubmatch(body); m != nil {
		e.Code = unescapeJSON(m[1])
		if e.Code == e.InnerCode {
			e.Code = "" // the only code found was the inner one
		}
	}
	if m := errMessageRe.FindSubmatch(body); m != nil {
		e.Message = unescapeJSON(m[1])
	}
	if e.Code == "" && e.InnerCode == "" && e.Message == "" {
		e.Raw = string(bytes.TrimSpace(body[:min(len(body), 4096)]))
	}
	return e
}

func anyString(v any) string {
	s, _ := v.(string)
	return s
}

// unescapeJSON decodes the inside of a JSON string that may be cut short.
func unescapeJSON(b []byte) string {
	var s string
	if json.Unmarshal([]byte(`"`+string(b)+`"`), &s) == nil {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out.WriteByte(c)
			continue
		}
		if i+1 >= len(b) {
			break
		}
		i++
		switch b[i] {
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			if i+4 < len(b) {
				if r, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 32); err == nil {
					out.WriteRune(rune(r))
				}
			}
			i += 4
		default:
			out.WriteByte(b[i])
		}
	}
	return out.String()
}
