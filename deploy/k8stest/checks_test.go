package k8stest

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// kvproxy's admin endpoints (the contract probes may use).
const (
	pathHealthz = "/healthz"
	pathReadyz  = "/readyz"
)

// checkHardenedPod asserts the pod-level and every container's security
// settings: non-root, read-only root filesystem, all capabilities dropped,
// no privilege escalation, RuntimeDefault seccomp, no API token mounted.
func checkHardenedPod(t *testing.T, where string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (kvproxy never calls the Kubernetes API)", where)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: must not share host namespaces", where)
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: container %s has no securityContext", where, c.Name)
			continue
		}
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
		if !nonRoot {
			t.Errorf("%s: container %s: runAsNonRoot is not true", where, c.Name)
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = psc.RunAsUser
		}
		if uid != nil && *uid == 0 {
			t.Errorf("%s: container %s runs as uid 0", where, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", where, c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: container %s is privileged", where, c.Name)
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
			t.Errorf("%s: container %s: capabilities must drop [ALL] and add none, have %+v", where, c.Name, sc.Capabilities)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: container %s: seccompProfile is not RuntimeDefault", where, c.Name)
		}
	}
}

// checkKvproxyContainer asserts what every kvproxy container must have:
// the image, env names that exist in kvproxy's configuration with values
// of the right type, the admin listener on a port the probes use, probes on
// real endpoints, resources. It returns the container's env.
func checkKvproxyContainer(t *testing.T, where string, c corev1.Container, vars map[string]configVariable) map[string]string {
	t.Helper()
	if !strings.HasPrefix(c.Image, "ghcr.io/kvproxy/kvproxy:") && !strings.Contains(c.Image, "/kvproxy") {
		t.Errorf("%s: image %q is not kvproxy's", where, c.Image)
	}
	if len(c.Command) != 0 || len(c.Args) != 0 {
		t.Errorf("%s: command/args %q %q: the image's entrypoint runs the proxy, configured by env only", where, c.Command, c.Args)
	}
	env := envMap(t, c)
	sdk := map[string]bool{}
	for _, v := range configVariables(t) {
		if v.SDK {
			sdk[v.Name] = true
		}
	}
	for name, value := range env {
		switch {
		case strings.HasPrefix(name, "KVPROXY_"):
			v, ok := vars[name]
			if !ok {
				t.Errorf("%s: env %s is not a kvproxy variable (internal/config has %v)", where, name, sortedKeys(vars))
				continue
			}
			if value != "<valueFrom>" {
				checkValueType(t, where, v, value)
			}
		case strings.HasPrefix(name, "AZURE_") || strings.HasPrefix(name, "IDENTITY_"):
			if !sdk[name] {
				t.Errorf("%s: env %s is not an Azure SDK variable kvproxy reads", where, name)
			}
		}
	}
	if u := env["KVPROXY_VAULT_URL"]; !strings.HasPrefix(u, "https://") {
		t.Errorf("%s: KVPROXY_VAULT_URL = %q, want an https vault URL", where, u)
	}

	// The admin listener must be reachable by the kubelet: not loopback,
	// on a declared container port that every probe uses.
	admin := env["KVPROXY_ADMIN_ADDR"]
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		t.Fatalf("%s: KVPROXY_ADMIN_ADDR = %q: %v (it must be set: the default 127.0.0.1 is unreachable for probes)", where, admin, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("%s: KVPROXY_ADMIN_ADDR = %q: the kubelet and Prometheus need it on all interfaces (0.0.0.0)", where, admin)
	}
	adminPort, _ := strconv.Atoi(port)
	var adminPortName string
	for _, p := range c.Ports {
		if int(p.ContainerPort) == adminPort {
			adminPortName = p.Name
		}
	}
	if adminPortName == "" {
		t.Errorf("%s: no container port declares the admin port %d", where, adminPort)
	}
	probes := map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe}
	for kind, p := range probes {
		if p == nil {
			t.Errorf("%s: no %s", where, kind)
			continue
		}
		if p.HTTPGet == nil {
			t.Errorf("%s: %s is not an httpGet probe", where, kind)
			continue
		}
		if !(p.HTTPGet.Port.String() == adminPortName || p.HTTPGet.Port.IntValue() == adminPort) {
			t.Errorf("%s: %s probes port %s, the admin listener is %d (%s)", where, kind, p.HTTPGet.Port.String(), adminPort, adminPortName)
		}
		if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s: %s uses %s; the admin listener speaks plain HTTP", where, kind, p.HTTPGet.Scheme)
		}
	}
	if p := c.LivenessProbe; p != nil && p.HTTPGet != nil && p.HTTPGet.Path != pathHealthz {
		t.Errorf("%s: livenessProbe path %q, want %s (liveness must not depend on Azure)", where, p.HTTPGet.Path, pathHealthz)
	}
	if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil && p.HTTPGet.Path != pathReadyz {
		t.Errorf("%s: readinessProbe path %q, want %s (ready = a valid token is held)", where, p.HTTPGet.Path, pathReadyz)
	}
	if p := c.StartupProbe; p != nil && p.HTTPGet != nil && p.HTTPGet.Path != pathHealthz && p.HTTPGet.Path != pathReadyz {
		t.Errorf("%s: startupProbe path %q is not a kvproxy endpoint", where, p.HTTPGet.Path)
	}

	req := c.Resources.Requests
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("%s: resources.requests need cpu and memory, have %v", where, req)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory limit", where)
	}
	return env
}

// checkValueType parses an env value as the Config field's Go type would.
func checkValueType(t *testing.T, where string, v configVariable, value string) {
	t.Helper()
	var err error
	switch v.Type {
	case "time.Duration":
		var d time.Duration
		d, err = time.ParseDuration(value)
		// Every duration must be positive, but a zero default means off
		// (KVPROXY_CACHE_TTL=0): zero is fine where the default is zero.
		if zero, _ := time.ParseDuration(v.Default); err == nil && d <= 0 && !(d == 0 && v.Default != "" && zero == 0) {
			t.Errorf("%s: %s = %q must be positive", where, v.Name, value)
		}
	case "bool":
		_, err = strconv.ParseBool(value)
	case "int", "int64":
		_, err = strconv.ParseInt(value, 10, 64)
	}
	if err != nil {
		t.Errorf("%s: %s = %q is not a %s: %v", where, v.Name, value, v.Type, err)
	}
}

// terminationGrace asserts the pod waits longer than kvproxy drains.
func checkTerminationGrace(t *testing.T, where string, spec corev1.PodSpec, env map[string]string, vars map[string]configVariable) {
	t.Helper()
	drain := env["KVPROXY_SHUTDOWN_TIMEOUT"]
	if drain == "" {
		drain = vars["KVPROXY_SHUTDOWN_TIMEOUT"].Default
	}
	d, err := time.ParseDuration(drain)
	if err != nil {
		t.Fatalf("%s: shutdown timeout %q: %v", where, drain, err)
	}
	grace := int64(30)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	if time.Duration(grace)*time.Second <= d {
		t.Errorf("%s: terminationGracePeriodSeconds %d must exceed KVPROXY_SHUTDOWN_TIMEOUT %s, or draining is cut short", where, grace, d)
	}
}

// checkNetworkPolicy asserts that a NetworkPolicy selects the kvproxy pods,
// restricts ingress, and admits on the proxy port only the expected peers.
// Every rule must name its sources and ports: an empty from admits everyone.
func checkNetworkPolicy(t *testing.T, where string, np *networkingv1.NetworkPolicy, podLabels map[string]string, proxyPort, adminPort string, wantClients []networkingv1.NetworkPolicyPeer) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: NetworkPolicy podSelector %v does not select the kvproxy pods %v", where, np.Spec.PodSelector, podLabels)
	}
	hasIngress := false
	for _, pt := range np.Spec.PolicyTypes {
		hasIngress = hasIngress || pt == networkingv1.PolicyTypeIngress
	}
	if !hasIngress {
		t.Errorf("%s: NetworkPolicy policyTypes %v lacks Ingress", where, np.Spec.PolicyTypes)
	}
	var proxyPeers []networkingv1.NetworkPolicyPeer
	for i, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 {
			t.Errorf("%s: ingress rule %d has no from: it admits every source", where, i)
		}
		if len(rule.Ports) == 0 {
			t.Errorf("%s: ingress rule %d has no ports: it opens every port", where, i)
		}
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Errorf("%s: ingress rule %d opens all ports", where, i)
				continue
			}
			switch p.Port.String() {
			case proxyPort:
				proxyPeers = append(proxyPeers, rule.From...)
			case adminPort:
			default:
				t.Errorf("%s: ingress rule %d opens port %s, which kvproxy does not serve", where, i, p.Port.String())
			}
		}
		for _, peer := range rule.From {
			if peer.PodSelector == nil && peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchLabels) == 0 && len(peer.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("%s: ingress rule %d admits every pod of every namespace", where, i)
			}
			if peer.PodSelector != nil && peer.NamespaceSelector == nil && len(peer.PodSelector.MatchLabels) == 0 && len(peer.PodSelector.MatchExpressions) == 0 {
				t.Errorf("%s: ingress rule %d admits every pod of the namespace, labelled or not", where, i)
			}
		}
	}
	if !equalJSON(proxyPeers, wantClients) {
		t.Errorf("%s: proxy port admits\n  %s\nwant\n  %s", where, toJSON(proxyPeers), toJSON(wantClients))
	}
}

// selects asserts a label selector matches the pod labels.
func selects(t *testing.T, where string, sel map[string]string, podLabels map[string]string) {
	t.Helper()
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not match pod labels %v", where, sel, podLabels)
	}
}

func quantity(s string) resource.Quantity { return resource.MustParse(s) }
