package k8stest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// Paths into the kvproxy repository, relative to this module.
var (
	repoRoot  = filepath.Join("..", "..")
	chartDir  = filepath.Join(repoRoot, "charts", "kvproxy")
	deployDir = filepath.Join(repoRoot, "deploy")
)

// scheme holds every kind kvproxy ships; decoding any other kind fails.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecoder rejects unknown fields and duplicate keys.
var strictDecoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// object is one decoded Kubernetes object and where it came from.
type object struct {
	source string
	gvk    schema.GroupVersionKind
	obj    runtime.Object
}

func (o object) name() string {
	m, err := meta.Accessor(o.obj)
	if err != nil {
		return ""
	}
	return m.GetName()
}

type objects []object

// kinds lists "Kind/name" of every object, sorted.
func (os objects) kinds() []string {
	var out []string
	for _, o := range os {
		out = append(out, o.gvk.Kind+"/"+o.name())
	}
	sort.Strings(out)
	return out
}

// only returns the single object of type T, failing if there is not exactly one.
func only[T runtime.Object](t *testing.T, os objects) T {
	t.Helper()
	all := all[T](os)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, have %d among %v", zero, len(all), os.kinds())
	}
	return all[0]
}

func all[T runtime.Object](os objects) []T {
	var out []T
	for _, o := range os {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func has[T runtime.Object](os objects) bool { return len(all[T](os)) > 0 }

// decodeDocuments splits multi-document YAML and decodes each document
// strictly into its Go type.
func decodeDocuments(source string, data []byte) (objects, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out objects
	var errs []error
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		var probe map[string]any
		if err := sigsyaml.Unmarshal(doc, &probe); err != nil {
			errs = append(errs, fmt.Errorf("%s document %d: %w", source, i, err))
			continue
		}
		if len(probe) == 0 {
			continue // only comments
		}
		obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s document %d (%v/%v): %w", source, i, probe["apiVersion"], probe["kind"], err))
			continue
		}
		out = append(out, object{source: source, gvk: *gvk, obj: obj})
	}
	return out, errors.Join(errs...)
}

// configVariable is one variable of kvproxy's Config struct.
type configVariable struct {
	Name    string
	Default string
	Type    string // the field's Go type: string, bool, int, int64, time.Duration, …
	SDK     bool
}

// configVariables reads kvproxy's Config struct from internal/config with
// go/ast, mirroring config.Variables(): fields with `env` and `desc` tags are
// kvproxy's own variables, those with `sdk` the Azure SDK's. Parsing instead
// of importing keeps this module independent of kvproxy's dependencies.
func configVariables(t *testing.T) []configVariable {
	t.Helper()
	dir := filepath.Join(repoRoot, "internal", "config")
	var out []configVariable
	eachFile(t, dir, func(f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != "Config" {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				t.Fatalf("config.Config is not a struct")
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				raw, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatal(err)
				}
				tag := reflect.StructTag(raw)
				name, _, _ := strings.Cut(tag.Get("env"), ",")
				if name == "" {
					continue
				}
				typ := types.ExprString(field.Type)
				if _, ok := tag.Lookup("desc"); ok {
					out = append(out, configVariable{Name: name, Default: tag.Get("envDefault"), Type: typ})
				} else if _, ok := tag.Lookup("sdk"); ok {
					out = append(out, configVariable{Name: name, Type: typ, SDK: true})
				}
			}
			return false
		})
	})
	if len(out) == 0 {
		t.Fatalf("found no Config struct with env tags in %s", dir)
	}
	return out
}

// kvproxyVariables returns the KVPROXY_* variables (config.KvproxyVariableNames).
func kvproxyVariables(t *testing.T) map[string]configVariable {
	t.Helper()
	m := map[string]configVariable{}
	for _, v := range configVariablesCached(t) {
		if !v.SDK {
			m[v.Name] = v
		}
	}
	return m
}

// metric describes one collector defined in kvproxy's metrics package.
type metric struct {
	Kind   string // Counter, Gauge or Histogram
	Labels []string
}

// kvproxyMetrics reads the metric names, kinds and label names defined in
// metrics/*.go with go/ast: every prometheus.*Opts literal with a Name field,
// and the label list passed next to it to a New*Vec call.
func kvproxyMetrics(t *testing.T) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	optsName := func(e ast.Expr) (name, kind string, ok bool) {
		cl, ok := e.(*ast.CompositeLit)
		if !ok {
			return "", "", false
		}
		sel, ok := cl.Type.(*ast.SelectorExpr)
		if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
			return "", "", false
		}
		for _, el := range cl.Elts {
			kv, ok := el.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
				if lit, ok := kv.Value.(*ast.BasicLit); ok {
					s, err := strconv.Unquote(lit.Value)
					if err == nil {
						return s, strings.TrimSuffix(sel.Sel.Name, "Opts"), true
					}
				}
			}
		}
		return "", "", false
	}
	eachFile(t, filepath.Join(repoRoot, "metrics"), func(f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok && len(call.Args) == 2 {
				if name, kind, ok := optsName(call.Args[0]); ok {
					var labels []string
					if cl, ok := call.Args[1].(*ast.CompositeLit); ok {
						for _, el := range cl.Elts {
							if lit, ok := el.(*ast.BasicLit); ok {
								s, _ := strconv.Unquote(lit.Value)
								labels = append(labels, s)
							}
						}
					}
					out[name] = metric{Kind: kind, Labels: labels}
					return false
				}
			}
			if name, kind, ok := optsName(asExpr(n)); ok {
				if _, seen := out[name]; !seen {
					out[name] = metric{Kind: kind}
				}
			}
			return true
		})
	})
	if len(out) == 0 {
		t.Fatal("found no metric definitions in metrics/")
	}
	return out
}

func asExpr(n ast.Node) ast.Expr {
	e, _ := n.(ast.Expr)
	return e
}

// diagnosisCodes reads the Diag* string constants of the proxy package.
func diagnosisCodes(t *testing.T) []string {
	t.Helper()
	var codes []string
	eachFile(t, filepath.Join(repoRoot, "proxy"), func(f *ast.File) {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Diag") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						s, _ := strconv.Unquote(lit.Value)
						codes = append(codes, s)
					}
				}
			}
		}
	})
	if len(codes) == 0 {
		t.Fatal("found no Diag* constants in proxy/")
	}
	slices.Sort(codes)
	return codes
}

// eachFile parses every non-test Go file of a directory.
func eachFile(t *testing.T, dir string, fn func(*ast.File)) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		fn(f)
	}
}

// envMap returns a container's literal env values; valueFrom entries map to "<valueFrom>".
func envMap(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range c.Env {
		if _, dup := m[e.Name]; dup {
			t.Errorf("container %s sets %s twice", c.Name, e.Name)
		}
		if e.ValueFrom != nil {
			m[e.Name] = "<valueFrom>"
			continue
		}
		m[e.Name] = e.Value
	}
	return m
}

// containerPort returns the port number of a named container port.
func containerPort(c corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

var (
	configVarsOnce sync.Once
	configVars     []configVariable
)

// configVariablesCached parses internal/config once per test binary.
func configVariablesCached(t *testing.T) []configVariable {
	t.Helper()
	configVarsOnce.Do(func() { configVars = configVariables(t) })
	return configVars
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// equalJSON compares two values by their JSON encoding (nil and empty agree).
func equalJSON(a, b any) bool {
	norm := func(v any) any {
		var out any
		_ = json.Unmarshal([]byte(toJSON(v)), &out)
		if s, ok := out.([]any); ok && len(s) == 0 {
			return nil
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
