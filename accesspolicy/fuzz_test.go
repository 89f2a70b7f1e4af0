package accesspolicy

import (
	"strings"
	"testing"
)

// FuzzParse: any file is either refused or yields rules that parse again
// to the same policy.
func FuzzParse(f *testing.F) {
	f.Add([]byte(issueExample))
	f.Add([]byte(`{"rules":[{"subjects":["system:serviceaccount:a:*"],"methods":["put"],"paths":["/secrets/[a-z]*"]}]}`))
	f.Add([]byte("rules: [{subjects: [x], paths: ['/[']}]"))
	f.Add([]byte("rules: &a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		for i, r := range p.Rules() {
			if len(r.Subjects) == 0 || len(r.Methods) == 0 || len(r.Paths) == 0 {
				t.Fatalf("rule %d accepted with an empty list: %+v", i, r)
			}
		}
	})
}

// FuzzAllow: a path that is not clean is never allowed, whatever the
// policy; a denial's message is one printable line.
func FuzzAllow(f *testing.F) {
	p, err := Parse([]byte(issueExample + `
  - subjects: ["system:serviceaccount:ops:*"]
    methods: [GET, PUT, DELETE, POST, PATCH]
    paths: ["/secrets", "/keys/*/[a-f]*"]
`))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/secrets/db-x", "/secrets/db-x/../../keys", "/secrets/%2e%2e/x", "/secrets//x", "/secrets/x%2F..", "/keys/k/abc"} {
		f.Add("system:serviceaccount:ops:a", "GET", s)
		f.Add("system:serviceaccount:apps:web", "GET", s)
	}
	f.Fuzz(func(t *testing.T, subject, method, path string) {
		d := p.Allow(subject, method, path)
		if d.Allowed {
			if _, why := cleanPath(path); why != "" {
				t.Fatalf("allowed the unclean path %q", path)
			}
			if strings.Contains(subject, "*") {
				t.Fatalf("allowed the subject %q", subject)
			}
			return
		}
		m := d.Message()
		for i := 0; i < len(m); i++ {
			if m[i] < 0x20 || m[i] > 0x7e {
				t.Fatalf("message %q holds byte %#x", m, m[i])
			}
		}
		if d.Fix != "" {
			fp, err := Parse([]byte("rules: [" + d.Fix + "]"))
			if err != nil {
				t.Fatalf("fix %s does not parse: %v", d.Fix, err)
			}
			if !fp.Allow(subject, method, path).Allowed {
				t.Fatalf("fix %s does not allow %q %q %q", d.Fix, subject, method, path)
			}
		}
	})
}
