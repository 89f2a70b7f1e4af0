package accesspolicy

import (
	"errors"
	"path"
	"slices"
	"strings"
	"testing"
)

const issueExample = `
rules:
  - subjects: ["system:serviceaccount:apps:web", "system:serviceaccount:batch:*"]
    methods: [GET]                       # default: [GET, HEAD]
    paths: ["/secrets/db-*", "/secrets/app-config"]
`

func mustParse(t *testing.T, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Rule
	}{
		{"issue example", issueExample, []Rule{{
			Subjects: []string{"system:serviceaccount:apps:web", "system:serviceaccount:batch:*"},
			Methods:  []string{"GET"}, Paths: []string{"/secrets/db-*", "/secrets/app-config"}}}},
		{"JSON", `{"rules":[{"subjects":["system:serviceaccount:a:b"],"paths":["/keys/k"]}]}`, []Rule{{
			Subjects: []string{"system:serviceaccount:a:b"}, Methods: []string{"GET", "HEAD"}, Paths: []string{"/keys/k"}}}},
		{"methods upper-cased and deduplicated", "rules: [{subjects: [system:serviceaccount:a:b], methods: [get, Put, GET], paths: [/secrets]}]", []Rule{{
			Subjects: []string{"system:serviceaccount:a:b"}, Methods: []string{"GET", "PUT"}, Paths: []string{"/secrets"}}}},
		{"no rules", "rules: []", []Rule{}},
		{"patterns", `rules: [{subjects: ["system:serviceaccount:a:b"], paths: ["/secrets/[a-c]?x*", "/certificates/*/pending", "/secrets/a\\*b"]}]`, []Rule{{
			Subjects: []string{"system:serviceaccount:a:b"}, Methods: []string{"GET", "HEAD"}, Paths: []string{"/secrets/[a-c]?x*", "/certificates/*/pending", `/secrets/a\*b`}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustParse(t, tt.in).Rules()
			if len(got) != len(tt.want) {
				t.Fatalf("rules %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if !slices.Equal(got[i].Subjects, tt.want[i].Subjects) || !slices.Equal(got[i].Methods, tt.want[i].Methods) || !slices.Equal(got[i].Paths, tt.want[i].Paths) {
					t.Errorf("rule %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	ok := "subjects: [system:serviceaccount:a:b], paths: [/secrets/x]"
	tests := []struct {
		name, in string
		want     []string // each must appear in the error
	}{
		{"empty file", "", []string{`"rules"`}},
		{"no rules key", "rule: []", []string{`unknown key "rule"`, `no "rules" key`}},
		{"rules not a list", "rules: {a: 1}", []string{"want a list of rules"}},
		{"not YAML", "rules: [", []string{"not YAML"}},
		{"duplicate key", "rules: []\nrules: []", []string{"not YAML"}},
		{"rule not a mapping", "rules: [x]", []string{"rule 0", "want a mapping"}},
		{"unknown rule key", "rules: [{" + ok + ", subject: [x]}]", []string{`rule 0: unknown key "subject"`}},
		{"missing subjects", "rules: [{paths: [/secrets/x]}]", []string{"rule 0: subjects: missing"}},
		{"missing paths", "rules: [{subjects: [system:serviceaccount:a:b]}]", []string{"rule 0: paths: missing"}},
		{"empty subjects", "rules: [{subjects: [], paths: [/secrets/x]}]", []string{"rule 0: subjects: empty list"}},
		{"empty methods", "rules: [{" + ok + ", methods: []}]", []string{"rule 0: methods: empty list"}},
		{"subjects a string", "rules: [{subjects: system:serviceaccount:a:b, paths: [/s]}]", []string{"rule 0: subjects: want a list of strings"}},
		{"second rule named", "rules: [{" + ok + "}, {" + ok + ", methods: [TRACE]}]", []string{`rule 1: methods[0] "TRACE": not a Key Vault method`}},
		{"bad pattern", "rules: [{subjects: [system:serviceaccount:a:b], paths: ['/secrets/[a-']}]", []string{`rule 0: paths[0] "/secrets/[a-"`, path.ErrBadPattern.Error()}},
		{"relative pattern", "rules: [{subjects: [system:serviceaccount:a:b], paths: [secrets/x]}]", []string{"must start with /"}},
		{"root pattern", "rules: [{subjects: [system:serviceaccount:a:b], paths: [/]}]", []string{"every path"}},
		{"dotdot pattern", "rules: [{subjects: [system:serviceaccount:a:b], paths: [/secrets/../keys]}]", []string{`".."`}},
		{"double slash pattern", "rules: [{subjects: [system:serviceaccount:a:b], paths: [//secrets]}]", []string{"empty segment"}},
		{"subject not a service account", "rules: [{subjects: [admin], paths: [/s]}]", []string{`rule 0: subjects[0] "admin"`}},
		{"subject prefix wildcard", "rules: [{subjects: ['system:serviceaccount:team-*'], paths: [/s]}]", []string{"subjects[0]"}},
		{"subject name wildcard partial", "rules: [{subjects: ['system:serviceaccount:apps:web-*'], paths: [/s]}]", []string{"subjects[0]"}},
		{"every mistake at once", "rules: [{subjects: [x], methods: [FOO], paths: [zz]}]", []string{"subjects[0]", "methods[0]", "paths[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted %q", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.name == "bad pattern" && !errors.Is(err, path.ErrBadPattern) {
				t.Errorf("error does not wrap path.ErrBadPattern: %v", err)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	p := mustParse(t, issueExample+`
  - subjects: ["system:serviceaccount:ops:rotator"]
    methods: [GET, PUT, DELETE]
    paths: ["/secrets/*"]
  - subjects: ["system:serviceaccount:apps:web"]
    paths: ["/keys/signing"]
`)
	const web, batch, ops = "system:serviceaccount:apps:web", "system:serviceaccount:batch:job-1", "system:serviceaccount:ops:rotator"
	tests := []struct {
		name                  string
		subject, method, path string
		rule                  int    // allowing rule, -1 for a denial
		explain               string // part of the explanation of a denial
		fix                   string // the Fix of a denial
	}{
		{"exact subject, pattern", web, "GET", "/secrets/db-password", 0, "", ""},
		{"a version below the match", web, "GET", "/secrets/db-password/0123abcd", 0, "", ""},
		{"exact path", web, "GET", "/secrets/app-config", 0, "", ""},
		{"trailing slash", web, "GET", "/secrets/app-config/", 0, "", ""},
		{"case-insensitive like the vault", web, "get", "/Secrets/DB-Password", 0, "", ""},
		{"percent-escape decoded once", web, "GET", "/secrets/db%2Dpassword", 0, "", ""},
		{"namespace wildcard", batch, "GET", "/secrets/db-x", 0, "", ""},
		{"default methods allow HEAD", web, "HEAD", "/keys/signing", 2, "", ""},
		{"other rule's methods", ops, "PUT", "/secrets/anything", 1, "", ""},
		{"allowed for one path, denied another", web, "GET", "/secrets/other", -1,
			"no rule allows system:serviceaccount:apps:web to GET /secrets/other",
			`{subjects: ["system:serviceaccount:apps:web"], methods: [GET], paths: ["/secrets/other"]}`},
		{"method not allowed", web, "DELETE", "/secrets/db-password", -1,
			"rule 0 allows system:serviceaccount:apps:web the path /secrets/db-password only for GET, not DELETE",
			`{subjects: ["system:serviceaccount:apps:web"], methods: [DELETE], paths: ["/secrets/db-password"]}`},
		{"HEAD not in an explicit list", web, "HEAD", "/secrets/db-password", -1, "only for GET", ""},
		{"a version: the fix names the secret", web, "GET", "/secrets/other/v1", -1, "", `{subjects: ["system:serviceaccount:apps:web"], methods: [GET], paths: ["/secrets/other"]}`},
		{"prefix is no segment match", web, "GET", "/secrets/dbx", -1, "no rule allows", ""},
		{"star stays in its segment", ops, "GET", "/keys/x", -1, "no rule allows", ""},
		{"collection alone is not below", web, "GET", "/secrets", -1, "no rule allows", ""},
		{"other namespace", "system:serviceaccount:batch2:job", "GET", "/secrets/db-x", -1, "no rule allows", ""},
		{"namespace wildcard is no subject", "system:serviceaccount:batch:*", "GET", "/secrets/db-x", -1, "", ""},
		{"no subject", "", "GET", "/secrets/db-x", -1, "no client identity", ""},
		{"dotdot", web, "GET", "/secrets/db-x/../../keys/signing", -1, ". or .. segment", ""},
		{"escaped dotdot", web, "GET", "/secrets/db-x/%2e%2e/other", -1, ". or .. segment", ""},
		{"dot", web, "GET", "/secrets/./db-x", -1, ". or .. segment", ""},
		{"double slash", web, "GET", "/secrets//db-x", -1, "empty segment", ""},
		{"escaped slash", web, "GET", "/secrets/db-x%2Fother", -1, "escaped /", ""},
		{"escaped backslash", web, "GET", "/secrets/db-x%5cother", -1, "escaped /", ""},
		{"backslash", web, "GET", `/secrets/db-x\other`, -1, "control byte or a \\", ""},
		{"control byte", web, "GET", "/secrets/db-x%0a", -1, "control byte", ""},
		{"bad escape", web, "GET", "/secrets/db-%zz", -1, "bad percent-escape", ""},
		{"relative", web, "GET", "secrets/db-x", -1, "does not start with /", ""},
		{"root", web, "GET", "/", -1, "names no collection", ""},
		{"unknown method: no fix", web, "TRACE", "/secrets/other", -1, "no rule allows", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Allow(tt.subject, tt.method, tt.path)
			if d.Rule != tt.rule || d.Allowed != (tt.rule >= 0) {
				t.Fatalf("Allow(%q, %q, %q) = %+v, want rule %d", tt.subject, tt.method, tt.path, d, tt.rule)
			}
			if d.Allowed {
				if d.Explanation != "" || d.Fix != "" || d.Message() != "" {
					t.Errorf("allowed with an explanation: %+v", d)
				}
				return
			}
			if !strings.Contains(d.Explanation, tt.explain) {
				t.Errorf("explanation %q lacks %q", d.Explanation, tt.explain)
			}
			if tt.fix != "" && d.Fix != tt.fix {
				t.Errorf("fix %q, want %q", d.Fix, tt.fix)
			}
			if d.Fix != "" {
				// The fix is a valid rule that allows the request.
				fp := mustParse(t, "rules: ["+d.Fix+"]")
				if !fp.Allow(tt.subject, tt.method, tt.path).Allowed {
					t.Errorf("the fix %s does not allow the request", d.Fix)
				}
				if !strings.Contains(d.Message(), d.Fix) {
					t.Errorf("message %q lacks the fix", d.Message())
				}
			}
			checkPrintable(t, d.Message())
		})
	}
}

func checkPrintable(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			t.Fatalf("message %q holds byte %#x: not fit for a header", s, s[i])
		}
	}
}

func TestNilPolicyDenies(t *testing.T) {
	var p *Policy
	if d := p.Allow("system:serviceaccount:a:b", "GET", "/secrets/x"); d.Allowed || d.Rule != -1 {
		t.Errorf("nil policy: %+v", d)
	}
	if d := mustParse(t, "rules: []").Allow("system:serviceaccount:a:b", "GET", "/secrets/x"); d.Allowed || d.Fix == "" {
		t.Errorf("empty policy: %+v", d)
	}
}

func TestExplanationBounded(t *testing.T) {
	p := mustParse(t, "rules: []")
	long := "/secrets/" + strings.Repeat("a", 5000)
	d := p.Allow("system:serviceaccount:a:b", "GET", long)
	if len(d.Explanation) > 2*maxQuoted+200 {
		t.Errorf("explanation of %d bytes", len(d.Explanation))
	}
	d = p.Allow("system:serviceaccount:a:b", "GET\r\nX-Evil: 1", "/secrets/x\r\n")
	checkPrintable(t, d.Message())
}

func BenchmarkAllow(b *testing.B) {
	p, err := Parse([]byte(issueExample))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Allow("system:serviceaccount:batch:job", "GET", "/secrets/db-password/0123")
	}
}
