package k8stest

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite charts/kvproxy/README.md's values table from values.yaml")

const (
	readmeStart = "<!-- values:start (generated from values.yaml by deploy/k8stest: go test -run TestChartReadme -update) -->"
	readmeEnd   = "<!-- values:end -->"
)

// valueDoc is one documented key of values.yaml.
type valueDoc struct {
	key, typ, def, desc string
}

// valueDocs walks values.yaml and returns every key documented with a
// "# --" comment, in file order. Keys neither documented nor under a
// documented key are returned as undocumented.
func valueDocs(t *testing.T) (docs []valueDoc, undocumented []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, n *yaml.Node, covered bool)
	walk = func(prefix string, n *yaml.Node, covered bool) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			desc, ok := docComment(k.HeadComment)
			if ok {
				docs = append(docs, valueDoc{key: key, typ: nodeType(v), def: nodeDefault(t, v), desc: desc})
			}
			switch {
			case v.Kind == yaml.MappingNode && len(v.Content) > 0 && !ok:
				walk(key+".", v, covered)
			case v.Kind == yaml.MappingNode && len(v.Content) > 0 && ok:
				// A documented object: its fields are covered (a pass-through
				// Kubernetes object) unless they carry their own docs.
				walk(key+".", v, true)
			case !ok && !covered:
				undocumented = append(undocumented, key)
			}
		}
	}
	walk("", root.Content[0], false)
	return docs, undocumented
}

// docComment returns the text after the last "# --" of a head comment.
func docComment(c string) (string, bool) {
	lines := strings.Split(c, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var parts []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if i == 0 {
			l = strings.TrimSpace(strings.TrimPrefix(l, "--"))
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, " "), true
}

func nodeType(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	}
	switch v.Tag {
	case "!!bool":
		return "bool"
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!null":
		return "null"
	}
	return "string"
}

func nodeDefault(t *testing.T, v *yaml.Node) string {
	t.Helper()
	var val any
	if err := v.Decode(&val); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(val); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(buf.String())
}

func valuesTable(docs []valueDoc) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, d := range docs {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", d.key, d.typ, esc(d.def), esc(d.desc))
	}
	return b.String()
}

// TestChartReadme keeps charts/kvproxy/README.md's values table generated
// from values.yaml, and every value documented.
func TestChartReadme(t *testing.T) {
	docs, undocumented := valueDocs(t)
	for _, k := range undocumented {
		t.Errorf("values.yaml: %s has no \"# --\" comment", k)
	}
	path := filepath.Join(chartDir, "README.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i, j := strings.Index(readme, readmeStart), strings.Index(readme, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q … %q", readmeStart, readmeEnd)
	}
	want := readme[:i] + readmeStart + "\n" + valuesTable(docs) + readme[j:]
	if want == readme {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
		return
	}
	t.Errorf("charts/kvproxy/README.md's values table is stale: run `cd deploy/k8stest && go test -run TestChartReadme -update`")
}

// TestREADMEDiagnostics: the README's two diagnostics tables, kvproxy's own
// refusals under "Endpoints" and the explanations of the vault's 401s and
// 403s under "Diagnostics", list every code of diagnose.All() once, in the
// table its kind belongs to and with its status, and no other code.
func TestREADMEDiagnostics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	tables := map[bool]map[string]string{ // Vault → code → the status column
		false: markdownTable(t, string(raw), "| diagnosis | status | when |"),
		true:  markdownTable(t, string(raw), "| code | when |"),
	}
	names := map[bool]string{false: "kvproxy's refusals", true: "the vault's answers"}
	for _, d := range kvproxyContract(t).Diagnoses {
		status, ok := tables[d.Vault][d.Name]
		if !ok {
			t.Errorf("README: the table of %s has no row for %s", names[d.Vault], d.Name)
			continue
		}
		delete(tables[d.Vault], d.Name)
		// kvproxy's own refusals have a status column; the vault's answers
		// say when, starting or ending with the status ("403 ForbiddenByRbac",
		// "any other 401").
		if (!d.Vault && status != d.Status) || (d.Vault && !strings.Contains(status, d.Status)) {
			t.Errorf("README: %s is listed with %q, diagnose.All() says status %s", d.Name, status, d.Status)
		}
	}
	for vault, rest := range tables {
		for code := range rest {
			t.Errorf("README: the table of %s lists %s, which is not a diagnosis code (diagnose.All())", names[vault], code)
		}
	}
}

// markdownTable returns the first two columns of the table under header:
// the first cell, without backticks, mapped to the second.
func markdownTable(t *testing.T, doc, header string) map[string]string {
	t.Helper()
	i := strings.Index(doc, "\n"+header)
	if i < 0 {
		t.Fatalf("README: no table with header %q", header)
	}
	lines := strings.Split(doc[i+1:], "\n")
	rows := map[string]string{}
	for _, l := range lines[2:] { // the header and the |---| line
		if !strings.HasPrefix(l, "|") {
			break
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		if len(cells) < 2 {
			t.Fatalf("README: table row %q has fewer than two cells", l)
		}
		// A row "`code` (variant)" adds a case of a code listed before,
		// such as the Managed HSM wording of forbidden-by-rbac.
		first := strings.TrimSpace(cells[0])
		code, variant, _ := strings.Cut(strings.TrimPrefix(first, "`"), "`")
		if variant = strings.TrimSpace(variant); variant != "" {
			if _, listed := rows[code]; !listed {
				t.Errorf("README: the variant row %q comes before the row of %s", first, code)
			}
			continue
		}
		if _, dup := rows[code]; dup {
			t.Errorf("README: %s has two rows in the table under %q", code, header)
		}
		rows[code] = strings.TrimSpace(cells[1])
	}
	if len(rows) == 0 {
		t.Fatalf("README: the table under %q is empty", header)
	}
	return rows
}
