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
