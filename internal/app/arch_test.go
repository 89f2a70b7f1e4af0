package app

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/internal/config"
)

const module = "github.com/kvproxy/kvproxy/"

// allowed is the import rule of docs/architecture.md: which of kvproxy's
// packages each public package may import (production files only).
var allowed = map[string][]string{
	"kvwire":       nil,
	"metrics":      nil,
	"diagnose":     {"kvwire"},
	"auth":         {"kvwire", "metrics"},
	"proxy":        {"accesspolicy", "clientauth", "diagnose", "kvwire", "metrics", "secretcache"},
	"clientauth":   nil,
	"secretcache":  nil,
	"accesspolicy": {"clientauth"},
}

func TestImportRule(t *testing.T) {
	for pkg, ok := range allowed {
		dir := filepath.Join("..", "..", pkg)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				ours, isOurs := strings.CutPrefix(path, module)
				if isOurs && !slices.Contains(ok, ours) {
					t.Errorf("%s/%s imports %s; the import rule allows %v", pkg, name, path, ok)
				}
			}
		}
	}
}

// config's KVPROXY_CREDENTIAL values and auth's kinds are two lists of one
// thing: every value but auto must name a kind, and every kind be a value.
func TestCredentialValuesAreKinds(t *testing.T) {
	values := []string{config.CredentialManagedIdentity, config.CredentialWorkloadIdentity,
		config.CredentialClientSecret, config.CredentialAzureCLI}
	for _, v := range values {
		if _, err := auth.ParseKind(v); err != nil {
			t.Errorf("KVPROXY_CREDENTIAL=%s is no auth.Kind: %v", v, err)
		}
	}
	for _, k := range auth.Kinds() {
		if !slices.Contains(values, string(k)) {
			t.Errorf("auth.Kind %q is not a KVPROXY_CREDENTIAL value", k)
		}
		cfg, err := config.Load(map[string]string{"KVPROXY_VAULT_URL": "https://v.vault.azure.net", "KVPROXY_CREDENTIAL": string(k)})
		if err != nil {
			t.Errorf("KVPROXY_CREDENTIAL=%s refused: %v", k, err)
			continue
		}
		if cfg.EffectiveCredential() != string(k) {
			t.Errorf("KVPROXY_CREDENTIAL=%s resolves to %s", k, cfg.EffectiveCredential())
		}
	}
}

// No production file of ours is over 600 lines, the playground's fakes aside.
func TestFileSize(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "azfake" || d.Name() == "e2e") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), "\n"); n > 600 {
			t.Errorf("%s has %d lines; split it by concern", path, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
