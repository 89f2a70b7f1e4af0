package k8stest

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	testRelease   = "kvproxy"
	testNamespace = "apps"
	testVaultURL  = "https://myvault.vault.azure.net"
)

// CRD API versions a cluster with the Prometheus Operator serves.
var prometheusOperatorAPIs = []string{
	"monitoring.coreos.com/v1",
	"monitoring.coreos.com/v1/ServiceMonitor",
	"monitoring.coreos.com/v1/PrometheusRule",
}

// rendered is one chart render: decoded objects and NOTES.txt.
type rendered struct {
	objects
	notes string
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading %s: %v", chartDir, err)
	}
	return ch
}

// render renders the chart as `helm install` would (schema validation on,
// strict template engine) and decodes every object strictly.
func render(t *testing.T, values map[string]any, apiVersions ...string) rendered {
	t.Helper()
	r, err := tryRender(t, values, apiVersions...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryRender(t *testing.T, values map[string]any, apiVersions ...string) (rendered, error) {
	t.Helper()
	ch := loadChart(t)
	helmLog.take()
	defer func() {
		for _, w := range helmLog.take() {
			t.Errorf("helm warned while rendering: %s", w)
		}
	}()
	caps := common.DefaultCapabilities.Copy()
	caps.APIVersions = append(slices.Clone(caps.APIVersions), apiVersions...)
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values,
		common.ReleaseOptions{Name: testRelease, Namespace: testNamespace, IsInstall: true, Revision: 1}, caps, false)
	if err != nil {
		return rendered{}, err
	}
	files, err := engine.Engine{Strict: true}.RenderWithContext(t.Context(), ch, vals)
	if err != nil {
		return rendered{}, err
	}
	var r rendered
	for _, name := range sortedKeys(files) {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			r.notes = files[name]
		case strings.HasSuffix(name, ".tpl"):
		default:
			objs, err := decodeDocuments(name, []byte(files[name]))
			if err != nil {
				return rendered{}, err
			}
			r.objects = append(r.objects, objs...)
		}
	}
	return r, nil
}

// values parses YAML into a values map.
func values(t *testing.T, y string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := sigsyaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func ciValues(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "ci", name))
	if err != nil {
		t.Fatal(err)
	}
	return values(t, string(b))
}

func ciFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("want several charts/kvproxy/ci/*.yaml, have %v (%v)", files, err)
	}
	return files
}

func minimal() string { return "vault: {url: " + testVaultURL + "}\n" }

// TestChartLint runs Helm's linter like `helm lint --strict`: over the
// default values and each ci/*.yaml file, any warning or error fails.
func TestChartLint(t *testing.T) {
	sets := map[string]map[string]any{"default values": nil}
	for _, f := range ciFiles(t) {
		sets[filepath.Base(f)] = ciValues(t, filepath.Base(f))
	}
	for name, vals := range sets {
		t.Run(name, func(t *testing.T) {
			helmLog.take()
			l := lint.RunAll(chartDir, vals, testNamespace)
			for _, w := range helmLog.take() {
				// Lint renders without values a real install must give.
				if name == "default values" && strings.Contains(w, "vault.url is required") {
					continue
				}
				t.Errorf("helm lint warned: %s", w)
			}
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestChartRequiresVaultURL: the chart's defaults alone fail at install
// with a message naming the value, instead of a pod crash-looping later.
func TestChartRequiresVaultURL(t *testing.T) {
	_, err := tryRender(t, nil)
	if err == nil || !strings.Contains(err.Error(), "vault.url is required") {
		t.Fatalf("rendering without vault.url: err = %v, want a 'vault.url is required' failure", err)
	}
}

// TestChartDefaults renders the default values plus the one required value
// and checks what the chart promises by default.
func TestChartDefaults(t *testing.T) {
	r := render(t, values(t, minimal()))
	want := []string{"Deployment/kvproxy", "NetworkPolicy/kvproxy", "PodDisruptionBudget/kvproxy", "Service/kvproxy", "ServiceAccount/kvproxy"}
	if got := r.kinds(); !slices.Equal(got, want) {
		t.Fatalf("default render has %v, want %v (no HPA, ServiceMonitor, PrometheusRule or dashboard by default)", got, want)
	}
	vars := kvproxyVariables(t)
	d := only[*appsv1.Deployment](t, r.objects)
	checkChartDeployment(t, r, vars)

	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	ch := loadChart(t)
	if want := "ghcr.io/kvproxy/kvproxy:" + ch.Metadata.AppVersion; c.Image != want {
		t.Errorf("image %q, want %q (tag defaults to appVersion)", c.Image, want)
	}
	env := envMap(t, c)
	if env["KVPROXY_LISTEN_ADDR"] != "0.0.0.0:8380" || env["KVPROXY_ADMIN_ADDR"] != "0.0.0.0:8381" {
		t.Errorf("listen %q admin %q, want 0.0.0.0:8380 and 0.0.0.0:8381 (a service is reached over the pod network)", env["KVPROXY_LISTEN_ADDR"], env["KVPROXY_ADMIN_ADDR"])
	}
	if env["KVPROXY_REQUIRE_METADATA_HEADER"] != "true" {
		t.Errorf("KVPROXY_REQUIRE_METADATA_HEADER = %q, the Metadata header requirement must stay on by default", env["KVPROXY_REQUIRE_METADATA_HEADER"])
	}
	// The chart's defaults are kvproxy's: a default changed in
	// internal/config must be changed in values.yaml too.
	for name, v := range vars {
		if name == "KVPROXY_LISTEN_ADDR" || name == "KVPROXY_ADMIN_ADDR" || v.Default == "" {
			continue
		}
		got, ok := env[name]
		if !ok {
			t.Errorf("default render lacks %s", name)
			continue
		}
		if !sameValue(v.Type, got, v.Default) {
			t.Errorf("%s = %q by default, kvproxy's default is %q: keep values.yaml in step with internal/config", name, got, v.Default)
		}
	}
	if _, ok := d.Spec.Template.Labels["azure.workload.identity/use"]; ok {
		t.Error("workload identity label set without azureWorkloadIdentity.clientId")
	}
	if d.Spec.Template.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Error("pods may land on Windows nodes; the image is Linux only")
	}
	if len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
		t.Error("no topology spread: both replicas may share a node")
	}
	for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		if tsc.LabelSelector == nil {
			t.Errorf("topology spread constraint %s has no labelSelector", tsc.TopologyKey)
			continue
		}
		selects(t, "topologySpreadConstraints", tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels)
	}

	// NetworkPolicy on by default, admitting only this namespace's pods
	// labelled <fullname>-client: "true".
	np := only[*networkingv1.NetworkPolicy](t, r.objects)
	checkNetworkPolicy(t, "default", np, d.Spec.Template.Labels, "proxy", "admin", []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kvproxy-client": "true"}}},
	})

	for _, s := range []string{"Metadata: true", "http://kvproxy.apps.svc:8380", `kvproxy-client: "true"`, "in the namespace apps"} {
		if !strings.Contains(r.notes, s) {
			t.Errorf("NOTES.txt lacks %q:\n%s", s, r.notes)
		}
	}
}

// checkChartDeployment asserts the invariants of every render: hardening,
// probes and env of the kvproxy container, Service and PDB selecting the
// pods, ServiceAccount wiring.
func checkChartDeployment(t *testing.T, r rendered, vars map[string]configVariable) {
	t.Helper()
	d := only[*appsv1.Deployment](t, r.objects)
	spec := d.Spec.Template.Spec
	checkHardenedPod(t, "chart", spec)
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("want one kvproxy container, have %d containers and %d init containers", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	env := checkKvproxyContainer(t, "chart", c, vars)
	checkTerminationGrace(t, "chart", spec, env, vars)
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != pathReadyz {
		t.Error("a service's readiness must be /readyz, so the Service routes only to pods holding a token")
	}
	selects(t, "Deployment", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)

	proxyPort, _ := containerPort(c, "proxy")
	if !strings.HasSuffix(env["KVPROXY_LISTEN_ADDR"], ":"+itoa(proxyPort)) {
		t.Errorf("KVPROXY_LISTEN_ADDR %q does not listen on the proxy container port %d", env["KVPROXY_LISTEN_ADDR"], proxyPort)
	}
	svc := only[*corev1.Service](t, r.objects)
	selects(t, "Service", svc.Spec.Selector, d.Spec.Template.Labels)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP && svc.Spec.Type != "" {
		t.Logf("Service type %s", svc.Spec.Type)
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := containerPort(c, p.TargetPort.String()); !ok {
			t.Errorf("Service port %s targets %s, which the container does not declare", p.Name, p.TargetPort.String())
		}
	}
	for _, pdb := range all[*policyv1.PodDisruptionBudget](r.objects) {
		selects(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	for _, sa := range all[*corev1.ServiceAccount](r.objects) {
		if sa.Name != spec.ServiceAccountName {
			t.Errorf("ServiceAccount %s created, pods run as %s", sa.Name, spec.ServiceAccountName)
		}
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Error("ServiceAccount automountServiceAccountToken must be false")
		}
	}
	for _, np := range all[*networkingv1.NetworkPolicy](r.objects) {
		selects(t, "NetworkPolicy", np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels)
	}
}

// TestChartCIValues renders every ci/*.yaml file and checks the invariants.
func TestChartCIValues(t *testing.T) {
	vars := kvproxyVariables(t)
	for _, f := range ciFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := render(t, ciValues(t, filepath.Base(f)), prometheusOperatorAPIs...)
			checkChartDeployment(t, r, vars)
			if !has[*networkingv1.NetworkPolicy](r.objects) {
				t.Error("no NetworkPolicy: every ci values file keeps it on")
			}
		})
	}
}

// TestChartEveryVariableReachable: each KVPROXY_* variable of kvproxy's
// Config struct can be set through values. The default render and
// ci/all-settings-values.yaml together must set every one of them, with
// the non-default values of that file.
func TestChartEveryVariableReachable(t *testing.T) {
	vars := kvproxyVariables(t)
	def := envMap(t, only[*appsv1.Deployment](t, render(t, values(t, minimal())).objects).Spec.Template.Spec.Containers[0])
	allEnv := envMap(t, only[*appsv1.Deployment](t, render(t, ciValues(t, "all-settings-values.yaml")).objects).Spec.Template.Spec.Containers[0])
	for name, v := range vars {
		got, ok := allEnv[name]
		if !ok {
			if _, inDefault := def[name]; !inDefault {
				t.Errorf("%s cannot be set through the chart's values", name)
			} else {
				t.Errorf("ci/all-settings-values.yaml does not set %s", name)
			}
			continue
		}
		if got == def[name] || (v.Default != "" && sameValue(v.Type, got, v.Default)) {
			t.Errorf("ci/all-settings-values.yaml leaves %s at %q; set it to a non-default value to prove it reaches the container", name, got)
		}
	}
	for name := range allEnv {
		if strings.HasPrefix(name, "KVPROXY_") {
			if _, ok := vars[name]; !ok {
				t.Errorf("chart sets %s, which kvproxy does not read", name)
			}
		}
	}
	if allEnv["KVPROXY_LISTEN_ADDR"] != "[::]:9380" {
		t.Errorf("IPv6 listen host rendered as %q, want [::]:9380", allEnv["KVPROXY_LISTEN_ADDR"])
	}
}

// TestChartWorkloadIdentity: azureWorkloadIdentity.clientId annotates the
// ServiceAccount and labels the pods for the webhook.
func TestChartWorkloadIdentity(t *testing.T) {
	r := render(t, ciValues(t, "workload-identity-values.yaml"))
	d := only[*appsv1.Deployment](t, r.objects)
	sa := only[*corev1.ServiceAccount](t, r.objects)
	if d.Spec.Template.Labels["azure.workload.identity/use"] != "true" {
		t.Error(`pod template lacks azure.workload.identity/use: "true"`)
	}
	if sa.Annotations["azure.workload.identity/client-id"] != "22222222-2222-2222-2222-222222222222" {
		t.Errorf("ServiceAccount annotations %v lack the client ID", sa.Annotations)
	}
	if sa.Annotations["azure.workload.identity/tenant-id"] != "33333333-3333-3333-3333-333333333333" {
		t.Errorf("ServiceAccount annotations %v lack the tenant ID", sa.Annotations)
	}
	env := envMap(t, d.Spec.Template.Spec.Containers[0])
	if env["KVPROXY_CREDENTIAL"] != "workload-identity" {
		t.Errorf("KVPROXY_CREDENTIAL = %q", env["KVPROXY_CREDENTIAL"])
	}
	if _, ok := env["KVPROXY_IDENTITY_CLIENT_ID"]; ok {
		t.Error("KVPROXY_IDENTITY_CLIENT_ID set: the webhook's AZURE_CLIENT_ID must decide")
	}
	if !strings.Contains(r.notes, "system:serviceaccount:apps:kvproxy") {
		t.Errorf("NOTES.txt does not name the federated subject:\n%s", r.notes)
	}
}

// TestChartManagedIdentity: the node's managed identity (IMDS) variant.
func TestChartManagedIdentity(t *testing.T) {
	r := render(t, ciValues(t, "managed-identity-values.yaml"))
	d := only[*appsv1.Deployment](t, r.objects)
	if _, ok := d.Spec.Template.Labels["azure.workload.identity/use"]; ok {
		t.Error("managed identity render carries the workload identity label")
	}
	if _, ok := only[*corev1.ServiceAccount](t, r.objects).Annotations["azure.workload.identity/client-id"]; ok {
		t.Error("managed identity render annotates the ServiceAccount for workload identity")
	}
	env := envMap(t, d.Spec.Template.Spec.Containers[0])
	if env["KVPROXY_CREDENTIAL"] != "managed-identity" || env["KVPROXY_IDENTITY_CLIENT_ID"] == "" {
		t.Errorf("credential %q client ID %q", env["KVPROXY_CREDENTIAL"], env["KVPROXY_IDENTITY_CLIENT_ID"])
	}
	if !strings.Contains(r.notes, "IMDS") {
		t.Errorf("NOTES.txt does not warn about IMDS sharing:\n%s", r.notes)
	}
}

// TestChartClientSecret: the secret comes from an existing Secret, never a value.
func TestChartClientSecret(t *testing.T) {
	r := render(t, ciValues(t, "client-secret-values.yaml"))
	c := only[*appsv1.Deployment](t, r.objects).Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "AZURE_CLIENT_SECRET" {
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != "kvproxy-app-registration" || e.ValueFrom.SecretKeyRef.Key != "client-secret" {
				t.Errorf("AZURE_CLIENT_SECRET = %+v, want a secretKeyRef to kvproxy-app-registration/client-secret", e)
			}
			return
		}
	}
	t.Error("AZURE_CLIENT_SECRET not set")
}

// TestChartNetworkPolicy covers the client selectors.
func TestChartNetworkPolicy(t *testing.T) {
	client := func(key string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{key: "true"}}
	}
	tests := []struct {
		name   string
		values string
		want   []networkingv1.NetworkPolicyPeer
		notes  string
	}{
		{
			name:   "custom client label",
			values: minimal() + "networkPolicy: {clientLabel: example.com/vault-reader}\n",
			want:   []networkingv1.NetworkPolicyPeer{{PodSelector: client("example.com/vault-reader")}},
			notes:  `example.com/vault-reader: "true"`,
		},
		{
			name:   "labelled pods of any namespace",
			values: minimal() + "networkPolicy: {clientNamespaceSelector: {}}\n",
			want:   []networkingv1.NetworkPolicyPeer{{PodSelector: client("kvproxy-client"), NamespaceSelector: &metav1.LabelSelector{}}},
			notes:  "in any namespace",
		},
		{
			name:   "labelled pods of selected namespaces",
			values: minimal() + "networkPolicy: {clientNamespaceSelector: {matchLabels: {team: payments}}}\n",
			want: []networkingv1.NetworkPolicyPeer{{PodSelector: client("kvproxy-client"),
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}}},
			notes: `in namespaces matching {"matchLabels":{"team":"payments"}}`,
		},
		{
			name:   "extra peers",
			values: minimal() + "networkPolicy: {extraClients: [{ipBlock: {cidr: 10.20.0.0/16}}]}\n",
			want: []networkingv1.NetworkPolicyPeer{{PodSelector: client("kvproxy-client")},
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.20.0.0/16"}}},
			notes: "plus 1 more peer(s)",
		},
		{
			name:   "fullname override names the label",
			values: minimal() + "fullnameOverride: vault-broker\n",
			want:   []networkingv1.NetworkPolicyPeer{{PodSelector: client("vault-broker-client")}},
			notes:  `vault-broker-client: "true"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, values(t, tt.values))
			d := only[*appsv1.Deployment](t, r.objects)
			np := only[*networkingv1.NetworkPolicy](t, r.objects)
			checkNetworkPolicy(t, tt.name, np, d.Spec.Template.Labels, "proxy", "admin", tt.want)
			if len(np.Spec.Ingress) != 1 {
				t.Errorf("%d ingress rules; without metricsFrom only the proxy rule", len(np.Spec.Ingress))
			}
			if !strings.Contains(r.notes, tt.notes) {
				t.Errorf("NOTES.txt lacks %q:\n%s", tt.notes, r.notes)
			}
		})
	}

	t.Run("metrics peers", func(t *testing.T) {
		r := render(t, ciValues(t, "monitoring-values.yaml"), prometheusOperatorAPIs...)
		np := only[*networkingv1.NetworkPolicy](t, r.objects)
		var adminPeers []networkingv1.NetworkPolicyPeer
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port.String() == "admin" {
					adminPeers = append(adminPeers, rule.From...)
				}
			}
		}
		want := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}}
		if !equalJSON(adminPeers, want) {
			t.Errorf("admin port admits %s, want %s", toJSON(adminPeers), toJSON(want))
		}
	})

	t.Run("disabled", func(t *testing.T) {
		r := render(t, values(t, minimal()+"networkPolicy: {enabled: false}\n"))
		if has[*networkingv1.NetworkPolicy](r.objects) {
			t.Error("NetworkPolicy rendered while disabled")
		}
		if !strings.Contains(r.notes, "WARNING: networkPolicy.enabled=false") {
			t.Errorf("NOTES.txt does not warn about the open service:\n%s", r.notes)
		}
	})
}

// TestChartSchemaRejects: values.schema.json refuses unknown keys and wrong
// types at install time.
func TestChartSchemaRejects(t *testing.T) {
	tests := []struct{ name, values, want string }{
		{"unknown top-level key", "replicas: 3\n", "replicas"},
		{"unknown nested key", "config: {logLevl: debug}\n", "logLevl"},
		{"misspelled workload identity key", "azureWorkloadIdentity: {clientID: x}\n", "clientID"},
		{"wrong type", "replicaCount: two\n", "replicaCount"},
		{"wrong type nested", "config: {readOnly: 'yes'}\n", "readOnly"},
		{"unknown credential", "config: {credential: password}\n", "credential"},
		{"bad duration", "config: {refreshBefore: 5 minutes}\n", "refreshBefore"},
		{"retry max out of range", "config: {retryMax: 11}\n", "retryMax"},
		{"plain http vault", "vault: {url: 'http://myvault.vault.azure.net'}\n", "url"},
		{"vault with a path", "vault: {url: 'https://myvault.vault.azure.net/secrets'}\n", "url"},
		{"port out of range", "ports: {proxy: 70000}\n", "proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := values(t, minimal())
			maps.Copy(v, values(t, tt.values))
			if tt.name == "plain http vault" || tt.name == "vault with a path" {
				v = values(t, tt.values)
			}
			_, err := tryRender(t, v)
			if err == nil {
				t.Fatalf("values %q accepted", tt.values)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name the schema and %q: %v", tt.want, err)
			}
		})
	}
}

// TestChartSchemaMatchesValues: every key of values.yaml is in the schema
// and every schema property has a default in values.yaml.
func TestChartSchemaMatchesValues(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	vals := loadChart(t).Values
	var walk func(path string, s map[string]any, v map[string]any)
	walk = func(path string, s map[string]any, v map[string]any) {
		props, ok := s["properties"].(map[string]any)
		if !ok {
			return
		}
		if s["additionalProperties"] != false {
			t.Errorf("schema %s does not set additionalProperties: false", orRoot(path))
		}
		for k := range v {
			if _, ok := props[k]; !ok {
				t.Errorf("values.yaml key %s%s is not in values.schema.json", path, k)
			}
		}
		for k, ps := range props {
			val, ok := v[k]
			if !ok {
				t.Errorf("schema property %s%s has no default in values.yaml", path, k)
				continue
			}
			if sub, ok := ps.(map[string]any); ok {
				if vm, ok := val.(map[string]any); ok {
					walk(path+k+".", sub, vm)
				}
			}
		}
	}
	walk("", schema, vals)
}

func orRoot(p string) string {
	if p == "" {
		return "(root)"
	}
	return strings.TrimSuffix(p, ".")
}

// TestChartMonitoring: ServiceMonitor and PrometheusRule appear only when
// the cluster serves their CRDs, or when forced; the dashboard ConfigMap
// carries the dashboard of deploy/monitoring.
func TestChartMonitoring(t *testing.T) {
	enabled := minimal() + "serviceMonitor: {enabled: true}\nprometheusRule: {enabled: true}\n"

	t.Run("without CRDs", func(t *testing.T) {
		r := render(t, values(t, enabled))
		if has[*monitoringv1.ServiceMonitor](r.objects) || has[*monitoringv1.PrometheusRule](r.objects) {
			t.Errorf("rendered %v on a cluster without the Prometheus Operator CRDs", r.kinds())
		}
		if !strings.Contains(r.notes, "serves no monitoring.coreos.com/v1\nServiceMonitor") {
			t.Errorf("NOTES.txt does not say the ServiceMonitor was skipped:\n%s", r.notes)
		}
	})

	t.Run("with CRDs", func(t *testing.T) {
		r := render(t, values(t, enabled), prometheusOperatorAPIs...)
		checkServiceMonitor(t, r)
		checkPrometheusRule(t, r)
		if strings.Contains(r.notes, "serves no") {
			t.Errorf("NOTES.txt claims a missing CRD:\n%s", r.notes)
		}
	})

	t.Run("disabled with CRDs", func(t *testing.T) {
		r := render(t, values(t, minimal()), prometheusOperatorAPIs...)
		if has[*monitoringv1.ServiceMonitor](r.objects) || has[*monitoringv1.PrometheusRule](r.objects) {
			t.Error("ServiceMonitor or PrometheusRule rendered while disabled")
		}
	})

	t.Run("forced", func(t *testing.T) {
		r := render(t, ciValues(t, "monitoring-values.yaml"))
		checkServiceMonitor(t, r)
		checkPrometheusRule(t, r)
		sm := only[*monitoringv1.ServiceMonitor](t, r.objects)
		if sm.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", sm.Labels)
		}
		cms := all[*corev1.ConfigMap](r.objects)
		if len(cms) != 1 {
			t.Fatalf("want the dashboard ConfigMap, have %v", r.kinds())
		}
		cm := cms[0]
		if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
			t.Errorf("dashboard ConfigMap labels %v namespace %q", cm.Labels, cm.Namespace)
		}
		want, err := os.ReadFile(filepath.Join(deployDir, "monitoring", "kvproxy-dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(cm.Data["kvproxy-dashboard.json"]) != strings.TrimSpace(string(want)) {
			t.Error("the chart's dashboard differs from deploy/monitoring/kvproxy-dashboard.json")
		}
	})
}

func checkServiceMonitor(t *testing.T, r rendered) {
	t.Helper()
	sm := only[*monitoringv1.ServiceMonitor](t, r.objects)
	svc := only[*corev1.Service](t, r.objects)
	selects(t, "ServiceMonitor", sm.Spec.Selector.MatchLabels, svc.Labels)
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
	}
	found := false
	for _, p := range svc.Spec.Ports {
		if p.Name == ep.Port && p.TargetPort.String() == "admin" {
			found = true
		}
	}
	if !found {
		t.Errorf("ServiceMonitor scrapes port %q, which is not the Service's admin port", ep.Port)
	}
	if sm.Spec.NamespaceSelector.Any || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{testNamespace}) {
		t.Errorf("ServiceMonitor namespaceSelector %+v, want the release namespace", sm.Spec.NamespaceSelector)
	}
}

func checkPrometheusRule(t *testing.T, r rendered) {
	t.Helper()
	pr := only[*monitoringv1.PrometheusRule](t, r.objects)
	want := loadRulesFile(t)
	if !reflect.DeepEqual(pr.Spec, want) {
		t.Errorf("the chart's PrometheusRule differs from deploy/monitoring/kvproxy.rules.yaml:\n%s\nwant\n%s", toJSON(pr.Spec), toJSON(want))
	}
}

// TestChartAutoscaling: the HPA targets the Deployment, which then leaves
// its replica count to it; the PDB stays.
func TestChartAutoscaling(t *testing.T) {
	r := render(t, ciValues(t, "autoscaling-values.yaml"))
	d := only[*appsv1.Deployment](t, r.objects)
	hpa := only[*autoscalingv2.HorizontalPodAutoscaler](t, r.objects)
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas %d under an HPA; every upgrade would reset the scale", *d.Spec.Replicas)
	}
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != d.Name {
		t.Errorf("HPA targets %+v", hpa.Spec.ScaleTargetRef)
	}
	if *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas || len(hpa.Spec.Metrics) == 0 {
		t.Errorf("HPA spec %+v", hpa.Spec)
	}
	if !has[*policyv1.PodDisruptionBudget](r.objects) {
		t.Error("no PodDisruptionBudget with autoscaling")
	}
	if c := d.Spec.Template.Spec.Containers[0]; !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("image %q not pinned by image.digest", c.Image)
	}
}

// TestChartPDB: no budget over a single replica (it would block drains).
func TestChartPDB(t *testing.T) {
	r := render(t, values(t, minimal()+"replicaCount: 1\n"))
	if has[*policyv1.PodDisruptionBudget](r.objects) {
		t.Error("PodDisruptionBudget over one replica blocks node drains")
	}
	r = render(t, values(t, minimal()+"podDisruptionBudget: {maxUnavailable: 1}\n"))
	pdb := only[*policyv1.PodDisruptionBudget](t, r.objects)
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB spec %+v, want maxUnavailable 1 only", pdb.Spec)
	}
}

// TestChartFilesInSync: the rules and dashboard the chart ships are the
// ones in deploy/monitoring.
func TestChartFilesInSync(t *testing.T) {
	for _, name := range []string{"kvproxy.rules.yaml", "kvproxy-dashboard.json"} {
		a, err := os.ReadFile(filepath.Join(chartDir, "files", name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(deployDir, "monitoring", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("charts/kvproxy/files/%s differs from deploy/monitoring/%s: copy it over", name, name)
		}
	}
}

// sameValue compares two values of a Config field's type.
func sameValue(typ, a, b string) bool {
	if typ == "time.Duration" {
		da, err1 := time.ParseDuration(a)
		db, err2 := time.ParseDuration(b)
		return err1 == nil && err2 == nil && da == db
	}
	return a == b
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
