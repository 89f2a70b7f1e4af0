package k8stest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
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

// contract is what `go run ./tools/contract` prints in the kvproxy
// repository: the code's own lists of configuration variables, metrics and
// diagnosis codes. Running the program instead of importing kvproxy keeps
// this module independent of kvproxy's dependencies; running it instead of
// parsing kvproxy's source makes the lists the ones the code exports.
type contract struct {
	Variables    []configVariable `json:"variables"`
	Metrics      []metric         `json:"metrics"`
	TokenResults []string         `json:"tokenResults"`
	RetryReasons []string         `json:"retryReasons"`
	Diagnoses    []diagnosis      `json:"diagnoses"`
}

// configVariable is one variable of kvproxy's configuration
// (config.Variables), with the Go type of its Config field.
type configVariable struct {
	Name        string `json:"name"`
	Default     string `json:"default"`
	Description string `json:"description"`
	Type        string `json:"type"` // string, bool, int, int64, time.Duration, …
	SDK         bool   `json:"sdk"`
}

// metric describes one metric kvproxy defines (metrics.Descriptions).
type metric struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`   // counter, gauge or histogram
	Labels []string `json:"labels"` // label names
}

// diagnosis is one diagnosis code (diagnose.All).
type diagnosis struct {
	Name string `json:"name"`
	// Status is the HTTP status as the README's tables write it.
	Status string `json:"status"`
	// Vault: an explanation of the vault's own 401 or 403, not one of
	// kvproxy's refusals.
	Vault bool `json:"vault"`
}

var (
	contractOnce sync.Once
	contractVal  contract
	contractErr  error
)

// kvproxyContract runs tools/contract in the repository once per test
// binary and decodes its output.
func kvproxyContract(t *testing.T) contract {
	t.Helper()
	contractOnce.Do(func() {
		cmd := exec.Command("go", "run", "./tools/contract")
		cmd.Dir = repoRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			contractErr = fmt.Errorf("go run ./tools/contract in %s: %v\n%s", repoRoot, err, stderr.Bytes())
			return
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&contractVal); err != nil {
			contractErr = fmt.Errorf("decoding the output of tools/contract: %v", err)
			return
		}
		if len(contractVal.Variables) == 0 || len(contractVal.Metrics) == 0 || len(contractVal.Diagnoses) == 0 || len(contractVal.TokenResults) == 0 {
			contractErr = fmt.Errorf("tools/contract printed an empty list: %s", out)
		}
	})
	if contractErr != nil {
		t.Fatal(contractErr)
	}
	return contractVal
}

// configVariables returns every variable kvproxy reads, its own and the
// Azure SDK's (config.Variables).
func configVariables(t *testing.T) []configVariable {
	t.Helper()
	return kvproxyContract(t).Variables
}

// kvproxyVariables returns the KVPROXY_* variables (config.KvproxyVariableNames).
func kvproxyVariables(t *testing.T) map[string]configVariable {
	t.Helper()
	m := map[string]configVariable{}
	for _, v := range configVariables(t) {
		if !v.SDK {
			m[v.Name] = v
		}
	}
	return m
}

// kvproxyMetrics returns kvproxy's metrics by name.
func kvproxyMetrics(t *testing.T) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	for _, m := range kvproxyContract(t).Metrics {
		out[m.Name] = m
	}
	return out
}

// diagnosisCodes returns every diagnosis code, sorted.
func diagnosisCodes(t *testing.T) []string {
	t.Helper()
	var codes []string
	for _, d := range kvproxyContract(t).Diagnoses {
		codes = append(codes, d.Name)
	}
	slices.Sort(codes)
	return codes
}

// tokenResults returns the values of kvproxy_token_acquisitions_total{result}.
func tokenResults(t *testing.T) []string {
	t.Helper()
	return kvproxyContract(t).TokenResults
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
