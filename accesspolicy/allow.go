package accesspolicy

import (
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Decision is the answer to one request.
type Decision struct {
	// Allowed is true when a rule allows the request.
	Allowed bool
	// Rule is the index of the allowing rule, or -1.
	Rule int
	// Explanation (denials only) is one line of printable ASCII naming the
	// subject, the method and the path and why no rule allows them, fit
	// for a response header, a response body and the log.
	Explanation string
	// Fix (denials of clean paths only) is a rule, in YAML flow style on
	// one line, that would allow the request: add it to the policy file's
	// rules, or widen its paths.
	Fix string
}

// Message is the denial as one line for the client and the log: the
// explanation and, when there is one, the rule that would allow the request.
// It is "" for an allowed request.
func (d Decision) Message() string {
	if d.Allowed {
		return ""
	}
	if d.Fix == "" {
		return d.Explanation
	}
	return d.Explanation + "; to allow it, add to the policy's rules: " + d.Fix
}

// maxQuoted bounds a value quoted in an explanation.
const maxQuoted = 200

// Allow decides whether subject may send method to the vault path
// (percent-escaped as received, without the query). A nil Policy denies.
func (p *Policy) Allow(subject, method, rawPath string) Decision {
	d := Decision{Rule: -1}
	if subject == "" {
		d.Explanation = "no client identity: every request needs an allowing rule for its subject"
		return d
	}
	segs, why := cleanPath(rawPath)
	if why != "" {
		d.Explanation = "path " + quote(rawPath) + " is denied: " + why
		return d
	}
	method = strings.ToUpper(method)
	var nsSubject string
	if ns, name, ok := splitSubject(subject); ok && name != "*" {
		nsSubject = ns
	}
	methodHint := -1
	if p != nil {
		for i := range p.rules {
			r := &p.rules[i]
			if !r.exact[subject] && !(nsSubject != "" && r.namespaces[nsSubject]) {
				continue
			}
			if !r.matchPath(segs) {
				continue
			}
			if r.methods[method] {
				return Decision{Allowed: true, Rule: i}
			}
			if methodHint < 0 {
				methodHint = i
			}
		}
	}
	if methodHint >= 0 {
		d.Explanation = "rule " + strconv.Itoa(methodHint) + " allows " + quote(subject) + " the path " + quote(rawPath) +
			" only for " + strings.Join(p.rules[methodHint].src.Methods, ", ") + ", not " + quote(method)
	} else {
		d.Explanation = "no rule allows " + quote(subject) + " to " + quote(method) + " " + quote(rawPath)
	}
	d.Fix = fix(subject, method, segs)
	return d
}

// matchPath: some pattern matches the first segments of the path.
func (r *rule) matchPath(segs []string) bool {
	for _, pat := range r.paths {
		if len(pat) > len(segs) {
			continue
		}
		ok := true
		for i, ps := range pat {
			if m, _ := path.Match(ps, segs[i]); !m {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// cleanPath decodes the path once, as the vault will, and splits it into
// lower-cased segments; why is non-empty for a path that is denied
// whatever the rules.
func cleanPath(raw string) (segs []string, why string) {
	if !strings.HasPrefix(raw, "/") {
		return nil, "it does not start with /"
	}
	lower := strings.ToLower(raw)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return nil, "it holds an escaped / or \\"
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return nil, "it holds a bad percent-escape"
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return nil, "it holds a control byte or a \\"
		}
	}
	p = strings.TrimSuffix(p[1:], "/") // one trailing / reads the same resource
	if p == "" {
		return nil, "it names no collection"
	}
	segs = strings.Split(strings.ToLower(p), "/")
	for _, s := range segs {
		switch s {
		case "":
			return nil, "it holds an empty segment (//)"
		case ".", "..":
			return nil, "it holds a . or .. segment"
		}
	}
	return segs, ""
}

// fix is a rule allowing subject method on the object the path names: the
// collection and the name (which covers its versions), or the whole path
// when it is one segment.
func fix(subject, method string, segs []string) string {
	if _, name, ok := splitSubject(subject); !ok || name == "*" || !slices.Contains(Methods, method) {
		return ""
	}
	n := min(len(segs), 2)
	p := "/" + strings.Join(segs[:n], "/")
	for _, s := range segs[:n] {
		if strings.ContainsAny(s, `*?[]\`) {
			return "" // the path would read as a pattern
		}
	}
	return "{subjects: [" + strconv.Quote(subject) + "], methods: [" + method + "], paths: [" + strconv.QuoteToASCII(p) + "]}"
}

// quote makes a value safe and bounded inside an explanation: plain
// values as they are, others Go-quoted in ASCII.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.QuoteToASCII(s[:maxQuoted]) + "..."
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' {
			return strconv.QuoteToASCII(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}
