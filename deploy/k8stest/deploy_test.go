package k8stest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// kustomizations lists the deploy/ folders holding a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(deployDir, "*", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range matches {
		dirs = append(dirs, filepath.Base(filepath.Dir(m)))
	}
	for _, want := range []string{"sidecar", "sidecar-managed-identity", "service", "monitoring"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("deploy/%s/kustomization.yaml missing", want)
		}
	}
	return dirs
}

// build runs `kustomize build deploy/<dir>` with kustomize's own code and
// decodes every object strictly.
func build(t *testing.T, dir string) objects {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(deployDir, dir))
	if err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeDocuments("deploy/"+dir, y)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestKustomizations builds every deploy/ folder, and checks that each of
// its manifests decodes strictly on its own and is listed in the
// kustomization (a file left out would silently not be applied).
func TestKustomizations(t *testing.T) {
	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			objs := build(t, dir)
			if len(objs) == 0 {
				t.Fatal("builds to nothing")
			}
			raw, err := os.ReadFile(filepath.Join(deployDir, dir, "kustomization.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var k types.Kustomization
			if err := sigsyaml.UnmarshalStrict(raw, &k); err != nil {
				t.Fatalf("kustomization.yaml: %v", err)
			}
			listed := slices.Clone(k.Resources)
			for _, g := range k.ConfigMapGenerator {
				listed = append(listed, g.FileSources...)
			}
			files, _ := filepath.Glob(filepath.Join(deployDir, dir, "*.yaml"))
			for _, f := range files {
				name := filepath.Base(f)
				if name == "kustomization.yaml" || name == "kvproxy.rules.yaml" {
					continue // the rule file is Prometheus', checked by TestAlertRules
				}
				if !slices.Contains(listed, name) {
					t.Errorf("%s is not listed in kustomization.yaml", name)
				}
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := decodeDocuments(name, b); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestSidecar checks deploy/sidecar: kvproxy as a native sidecar gating the
// app's start on a held token, with workload identity.
func TestSidecar(t *testing.T) {
	objs := build(t, "sidecar")
	d := only[*appsv1.Deployment](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	checkSidecarDeployment(t, "deploy/sidecar", d)
	if d.Spec.Template.Labels["azure.workload.identity/use"] != "true" {
		t.Error(`pod template lacks the label azure.workload.identity/use: "true"`)
	}
	if d.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("pods run as %q, the ServiceAccount is %q", d.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	if sa.Annotations["azure.workload.identity/client-id"] == "" {
		t.Error("ServiceAccount lacks the azure.workload.identity/client-id annotation")
	}
	env := envMap(t, d.Spec.Template.Spec.InitContainers[0])
	if env["KVPROXY_CREDENTIAL"] != "workload-identity" {
		t.Errorf("KVPROXY_CREDENTIAL = %q", env["KVPROXY_CREDENTIAL"])
	}
}

// TestSidecarManagedIdentity checks the IMDS variant: the same pod without
// the workload identity wiring, kvproxy told to use the node's identity.
func TestSidecarManagedIdentity(t *testing.T) {
	objs := build(t, "sidecar-managed-identity")
	d := only[*appsv1.Deployment](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	checkSidecarDeployment(t, "deploy/sidecar-managed-identity", d)
	if _, ok := d.Spec.Template.Labels["azure.workload.identity/use"]; ok {
		t.Error("the managed identity variant still asks for workload identity")
	}
	if _, ok := sa.Annotations["azure.workload.identity/client-id"]; ok {
		t.Error("the managed identity variant still annotates the ServiceAccount")
	}
	env := envMap(t, d.Spec.Template.Spec.InitContainers[0])
	if env["KVPROXY_CREDENTIAL"] != "managed-identity" || env["KVPROXY_IDENTITY_CLIENT_ID"] == "" {
		t.Errorf("credential %q client ID %q, want managed-identity with a client ID", env["KVPROXY_CREDENTIAL"], env["KVPROXY_IDENTITY_CLIENT_ID"])
	}
}

func checkSidecarDeployment(t *testing.T, where string, d *appsv1.Deployment) {
	t.Helper()
	vars := kvproxyVariables(t)
	spec := d.Spec.Template.Spec
	checkHardenedPod(t, where, spec)
	selects(t, where+" Deployment", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%s: want kvproxy as the one init container, have %d", where, len(spec.InitContainers))
	}
	kv := spec.InitContainers[0]
	if kv.RestartPolicy == nil || *kv.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: kvproxy init container lacks restartPolicy: Always (a native sidecar)", where)
	}
	env := checkKvproxyContainer(t, where, kv, vars)
	checkTerminationGrace(t, where, spec, env, vars)
	if kv.StartupProbe == nil || kv.StartupProbe.HTTPGet == nil || kv.StartupProbe.HTTPGet.Path != pathReadyz {
		t.Errorf("%s: the sidecar's startupProbe must hit %s, so the app starts only once a token is held", where, pathReadyz)
	}
	listen := env["KVPROXY_LISTEN_ADDR"]
	host, port, err := net.SplitHostPort(listen)
	if err != nil || !net.ParseIP(host).IsLoopback() || port != "8380" {
		t.Errorf("%s: KVPROXY_LISTEN_ADDR = %q, want 127.0.0.1:8380: only the pod's own containers may use the token", where, listen)
	}
	if _, ok := containerPort(kv, "proxy"); ok {
		t.Errorf("%s: the loopback proxy port is declared as a container port", where)
	}
	// A sidecar multiplies across every pod: keep its requests small.
	req := kv.Resources.Requests
	if req.Cpu().Cmp(quantity("25m")) > 0 || req.Memory().Cmp(quantity("64Mi")) > 0 {
		t.Errorf("%s: sidecar requests %v/%v; keep them near 10m/32Mi", where, req.Cpu(), req.Memory())
	}
	if len(spec.Containers) == 0 {
		t.Fatalf("%s: no app container", where)
	}
	for _, c := range spec.Containers {
		if strings.Contains(c.Image, "kvproxy/kvproxy") {
			t.Errorf("%s: kvproxy runs as a regular container %s; it must be the native sidecar", where, c.Name)
		}
	}
	app := spec.Containers[0]
	if !strings.Contains(strings.Join(slices.Concat(app.Command, app.Args), " "), "Metadata: true") {
		t.Errorf("%s: the example app does not show the Metadata: true header", where)
	}
	if d.Spec.Template.Labels["kvproxy-sidecar"] != "true" {
		t.Errorf("%s: pods lack kvproxy-sidecar: \"true\", which deploy/monitoring/podmonitor.yaml selects", where)
	}
	if _, ok := containerPort(kv, "kvproxy-admin"); !ok {
		t.Errorf("%s: no kvproxy-admin port for the PodMonitor", where)
	}
}

// TestService checks deploy/service: a shared kvproxy behind a
// NetworkPolicy that admits only labelled clients.
func TestService(t *testing.T) {
	objs := build(t, "service")
	want := []string{"Deployment/kvproxy", "NetworkPolicy/kvproxy", "PodDisruptionBudget/kvproxy", "Service/kvproxy", "ServiceAccount/kvproxy"}
	if got := objs.kinds(); !slices.Equal(got, want) {
		t.Fatalf("deploy/service builds %v, want %v", got, want)
	}
	d := only[*appsv1.Deployment](t, objs)
	spec := d.Spec.Template.Spec
	checkHardenedPod(t, "deploy/service", spec)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Error("want 2 replicas")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	vars := kvproxyVariables(t)
	env := checkKvproxyContainer(t, "deploy/service", c, vars)
	checkTerminationGrace(t, "deploy/service", spec, env, vars)
	if env["KVPROXY_LISTEN_ADDR"] != "0.0.0.0:8380" {
		t.Errorf("KVPROXY_LISTEN_ADDR = %q, want 0.0.0.0:8380", env["KVPROXY_LISTEN_ADDR"])
	}
	if env["KVPROXY_REQUIRE_METADATA_HEADER"] == "false" {
		t.Error("a shared service must keep the Metadata header requirement")
	}
	if d.Spec.Template.Labels["azure.workload.identity/use"] != "true" {
		t.Error("pods lack the workload identity label")
	}
	sa := only[*corev1.ServiceAccount](t, objs)
	if sa.Annotations["azure.workload.identity/client-id"] == "" || spec.ServiceAccountName != sa.Name {
		t.Error("ServiceAccount not annotated or not used")
	}
	svc := only[*corev1.Service](t, objs)
	selects(t, "Service", svc.Spec.Selector, d.Spec.Template.Labels)
	for _, p := range svc.Spec.Ports {
		if _, ok := containerPort(c, p.TargetPort.String()); !ok {
			t.Errorf("Service port %s targets %s, not a container port", p.Name, p.TargetPort.String())
		}
	}
	pdb := only[*policyv1.PodDisruptionBudget](t, objs)
	selects(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	np := only[*networkingv1.NetworkPolicy](t, objs)
	checkNetworkPolicy(t, "deploy/service", np, d.Spec.Template.Labels, "proxy", "admin", []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kvproxy-client": "true"}}},
	})

	mon := build(t, "monitoring")
	sm := only[*monitoringv1.ServiceMonitor](t, mon)
	selects(t, "ServiceMonitor", sm.Spec.Selector.MatchLabels, svc.Labels)
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" {
		t.Errorf("ServiceMonitor endpoints %+v, want the admin port", sm.Spec.Endpoints)
	}
}

// TestMonitoringKustomization: the PodMonitor finds the sidecars and the
// dashboard ConfigMap is labelled for Grafana's sidecar.
func TestMonitoringKustomization(t *testing.T) {
	mon := build(t, "monitoring")
	// Applied in the monitoring namespace, the monitors must look in the
	// apps' namespaces, and carry the label kube-prometheus-stack selects.
	pmon, smon := only[*monitoringv1.PodMonitor](t, mon), only[*monitoringv1.ServiceMonitor](t, mon)
	for _, m := range []struct {
		kind string
		sel  monitoringv1.NamespaceSelector
	}{{"PodMonitor", pmon.Spec.NamespaceSelector}, {"ServiceMonitor", smon.Spec.NamespaceSelector}} {
		if !m.sel.Any && !slices.Contains(m.sel.MatchNames, "apps") {
			t.Errorf("%s namespaceSelector %+v selects only its own namespace, not apps", m.kind, m.sel)
		}
	}
	for kind, labels := range map[string]map[string]string{
		"PodMonitor": pmon.Labels, "ServiceMonitor": smon.Labels, "PrometheusRule": only[*monitoringv1.PrometheusRule](t, mon).Labels,
	} {
		if labels["release"] != "kube-prometheus-stack" {
			t.Errorf("%s labels %v lack release: kube-prometheus-stack", kind, labels)
		}
	}
	side := only[*appsv1.Deployment](t, build(t, "sidecar"))
	pm := only[*monitoringv1.PodMonitor](t, mon)
	selects(t, "PodMonitor", pm.Spec.Selector.MatchLabels, side.Spec.Template.Labels)
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil ||
		*pm.Spec.PodMetricsEndpoints[0].Port != "kvproxy-admin" {
		t.Errorf("PodMonitor endpoints %+v, want the sidecar's kvproxy-admin port", pm.Spec.PodMetricsEndpoints)
	}
	cm := only[*corev1.ConfigMap](t, mon)
	if cm.Labels["grafana_dashboard"] != "1" || cm.Data["kvproxy-dashboard.json"] == "" {
		t.Errorf("dashboard ConfigMap %s: labels %v, keys %v", cm.Name, cm.Labels, sortedKeys(cm.Data))
	}
	only[*monitoringv1.PrometheusRule](t, mon)
}

// TestDeployImagesMatchChart: the manifests deploy the release the chart
// deploys, so a version bump cannot miss one of them.
func TestDeployImagesMatchChart(t *testing.T) {
	want := "ghcr.io/kvproxy/kvproxy:" + loadChart(t).Metadata.AppVersion
	for _, dir := range []string{"sidecar", "sidecar-managed-identity", "service"} {
		for _, d := range all[*appsv1.Deployment](build(t, dir)) {
			for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
				if strings.Contains(c.Image, "kvproxy/kvproxy") && c.Image != want {
					t.Errorf("deploy/%s: image %s, the chart's appVersion gives %s", dir, c.Image, want)
				}
			}
		}
	}
}

// TestVM checks deploy/vm: the systemd unit's hardening and the env file's
// variables (commented-out ones too) against kvproxy's configuration. With
// systemd-analyze on the machine, the unit is also verified by systemd.
func TestVM(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(deployDir, "vm", "kvproxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for line := range strings.Lines(string(unit)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("kvproxy.service: cannot read %q", line)
			continue
		}
		settings[k] = append(settings[k], v)
	}
	want := map[string]string{
		"ExecStart": "/usr/local/bin/kvproxy", "EnvironmentFile": "/etc/kvproxy/kvproxy.env",
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateDevices": "yes", "CapabilityBoundingSet": "", "KillSignal": "SIGTERM", "Restart": "on-failure",
	}
	for k, v := range want {
		if got := settings[k]; len(got) != 1 || got[0] != v {
			t.Errorf("kvproxy.service: %s=%q, want %q", k, got, v)
		}
	}
	vars := kvproxyVariables(t)
	stop, err := time.ParseDuration(strings.Join(settings["TimeoutStopSec"], ""))
	if drain, _ := time.ParseDuration(vars["KVPROXY_SHUTDOWN_TIMEOUT"].Default); err != nil || stop <= drain {
		t.Errorf("TimeoutStopSec %v must exceed KVPROXY_SHUTDOWN_TIMEOUT %v", settings["TimeoutStopSec"], drain)
	}

	envFile, err := os.ReadFile(filepath.Join(deployDir, "vm", "kvproxy.env"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(envFile)) {
		line = strings.TrimSpace(line)
		commented := strings.HasPrefix(line, "#KVPROXY_")
		if line == "" || (strings.HasPrefix(line, "#") && !commented) {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if !ok {
			t.Errorf("kvproxy.env: cannot read %q", line)
			continue
		}
		cv, known := vars[k]
		if !known {
			t.Errorf("kvproxy.env: %s is not a kvproxy variable", k)
			continue
		}
		checkValueType(t, "kvproxy.env", cv, v)
		if !commented {
			env[k] = v
		}
	}
	if !strings.HasPrefix(env["KVPROXY_VAULT_URL"], "https://") || env["KVPROXY_CREDENTIAL"] != "managed-identity" {
		t.Errorf("kvproxy.env: vault %q credential %q", env["KVPROXY_VAULT_URL"], env["KVPROXY_CREDENTIAL"])
	}
	for _, k := range []string{"KVPROXY_LISTEN_ADDR", "KVPROXY_ADMIN_ADDR"} {
		host, _, err := net.SplitHostPort(env[k])
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("kvproxy.env: %s=%q, want a loopback address on a VM", k, env[k])
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit was not verified by systemd")
		return
	}
	dir := t.TempDir()
	envPath := filepath.Join(dir, "kvproxy.env")
	if err := os.WriteFile(envPath, envFile, 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true binary to stand in for kvproxy")
	}
	patched := strings.NewReplacer("/usr/local/bin/kvproxy", bin, "/etc/kvproxy/kvproxy.env", envPath).Replace(string(unit))
	unitPath := filepath.Join(dir, "kvproxy.service")
	if err := os.WriteFile(unitPath, []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unitPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
