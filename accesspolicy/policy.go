package accesspolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kvproxy/kvproxy/clientauth"
)

// MaxFileBytes bounds a policy file.
const MaxFileBytes = 1 << 20

// Methods are the HTTP methods Key Vault's data plane uses, the only ones a
// rule may name.
var Methods = []string{"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"}

// DefaultMethods are a rule's methods when it names none: reads only.
var DefaultMethods = []string{"GET", "HEAD"}

// SubjectPrefix starts every subject a rule may name.
const SubjectPrefix = clientauth.SubjectPrefix

// Rule is one rule of a policy file, as written.
type Rule struct {
	Subjects []string `json:"subjects"`
	Methods  []string `json:"methods,omitempty"`
	Paths    []string `json:"paths"`
}

// Policy is a parsed, validated set of rules. The zero Policy, and a nil
// *Policy, deny everything. A Policy is immutable and safe for concurrent use.
type Policy struct {
	rules []rule
}

// rule is a compiled Rule.
type rule struct {
	src        Rule // as written, methods filled in and upper-cased
	exact      map[string]bool
	namespaces map[string]bool // "<ns>" for system:serviceaccount:<ns>:*
	methods    map[string]bool
	paths      [][]string // lower-cased pattern segments
}

// Load reads and parses the policy file at name.
func Load(name string) (*Policy, error) {
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileBytes+1)); err != nil {
		return nil, err
	}
	if buf.Len() > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxFileBytes)
	}
	return buf.Bytes(), nil
}

// Parse reads a policy (YAML or JSON) and validates every rule, reporting
// every mistake at once; each names the rule's index and field.
func Parse(b []byte) (*Policy, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("policy larger than %d bytes", MaxFileBytes)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, fmt.Errorf("policy is not YAML: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil || top == nil {
		return nil, errors.New(`policy must be a mapping with the key "rules"`)
	}
	var errs []error
	for k := range top {
		if k != "rules" {
			errs = append(errs, fmt.Errorf("unknown key %q (a policy has only \"rules\")", k))
		}
	}
	rawRules, ok := top["rules"]
	if !ok {
		errs = append(errs, errors.New(`no "rules" key (write "rules: []" to deny everything)`))
		return nil, errors.Join(errs...)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(rawRules, &list); err != nil {
		errs = append(errs, errors.New("rules: want a list of rules"))
		return nil, errors.Join(errs...)
	}
	p := &Policy{}
	for i, raw := range list {
		r, rerrs := compileRule(raw)
		for _, e := range rerrs {
			errs = append(errs, fmt.Errorf("rule %d: %w", i, e))
		}
		if len(rerrs) == 0 {
			p.rules = append(p.rules, r)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func compileRule(raw json.RawMessage) (rule, []error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return rule{}, []error{errors.New("want a mapping with subjects, methods and paths")}
	}
	var errs []error
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k != "subjects" && k != "methods" && k != "paths" {
			errs = append(errs, fmt.Errorf("unknown key %q (a rule has subjects, methods and paths)", k))
		}
	}
	list := func(key string, required bool) []string {
		raw, ok := fields[key]
		if !ok {
			if required {
				errs = append(errs, fmt.Errorf("%s: missing", key))
			}
			return nil
		}
		var v []string
		if err := json.Unmarshal(raw, &v); err != nil || v == nil {
			errs = append(errs, fmt.Errorf("%s: want a list of strings", key))
			return nil
		}
		if len(v) == 0 {
			errs = append(errs, fmt.Errorf("%s: empty list", key))
		}
		return v
	}
	r := rule{exact: map[string]bool{}, namespaces: map[string]bool{}, methods: map[string]bool{}}
	r.src.Subjects = list("subjects", true)
	r.src.Paths = list("paths", true)
	methods := list("methods", false)
	if _, given := fields["methods"]; !given {
		methods = DefaultMethods
	}

	for j, s := range r.src.Subjects {
		ns, name, ok := splitSubject(s)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("subjects[%d] %q: want system:serviceaccount:<namespace>:<name>, or system:serviceaccount:<namespace>:* for a whole namespace", j, s))
		case name == "*":
			r.namespaces[ns] = true
		default:
			r.exact[s] = true
		}
	}
	for j, m := range methods {
		u := strings.ToUpper(strings.TrimSpace(m))
		if !slices.Contains(Methods, u) {
			errs = append(errs, fmt.Errorf("methods[%d] %q: not a Key Vault method (%s)", j, m, strings.Join(Methods, ", ")))
			continue
		}
		if !r.methods[u] {
			r.methods[u] = true
			r.src.Methods = append(r.src.Methods, u)
		}
	}
	for j, pat := range r.src.Paths {
		segs, err := compilePattern(pat)
		if err != nil {
			errs = append(errs, fmt.Errorf("paths[%d] %q: %w", j, pat, err))
			continue
		}
		r.paths = append(r.paths, segs)
	}
	return r, errs
}

// splitSubject splits system:serviceaccount:<ns>:<name>, where name may be "*".
func splitSubject(s string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(s, SubjectPrefix)
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	if !ok || !clientauth.ValidNamespace(ns) || (name != "*" && !clientauth.ValidServiceAccount(name)) {
		return "", "", false
	}
	return ns, name, true
}

// compilePattern validates a path pattern and splits it into lower-cased
// segments.
func compilePattern(pat string) ([]string, error) {
	if !strings.HasPrefix(pat, "/") {
		return nil, errors.New("must start with /")
	}
	if pat == "/" {
		return nil, errors.New(`"/" would allow every path; name the collections (/secrets, /keys, /certificates)`)
	}
	segs := strings.Split(strings.ToLower(pat[1:]), "/")
	for _, s := range segs {
		switch s {
		case "":
			return nil, errors.New("empty segment (a doubled or trailing /)")
		case ".", "..":
			return nil, errors.New(`"." and ".." segments are not allowed`)
		}
		if _, err := path.Match(s, ""); err != nil {
			return nil, fmt.Errorf("%w (path.Match syntax: * ? [a-z] \\x)", err)
		}
	}
	return segs, nil
}

// Rules returns the policy's rules as written (methods upper-cased, the
// default filled in), for display.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = Rule{Subjects: slices.Clone(r.src.Subjects), Methods: slices.Clone(r.src.Methods), Paths: slices.Clone(r.src.Paths)}
	}
	return out
}
