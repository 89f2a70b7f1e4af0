package k8stest

import (
	"maps"
	"path"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// Issue 11's service mode: client identity, access policy, TLS, audit,
// the Host allowlist.

var certManagerAPIs = []string{"cert-manager.io/v1", "cert-manager.io/v1/Certificate"}

const serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// wantServiceNames are the Service's DNS names for release kvproxy in apps.
var wantServiceNames = []string{"kvproxy", "kvproxy.apps", "kvproxy.apps.svc", "kvproxy.apps.svc.cluster.local"}

const clientAuthValues = `
clientAuth: {enabled: true}
accessPolicy:
  rules:
    - subjects: ["system:serviceaccount:apps:web", "system:serviceaccount:batch:*"]
      methods: [GET]
      paths: ["/secrets/db-*", "/secrets/app-config"]
tls: {existingSecret: kvproxy-serving-cert}
audit: {enabled: true}
`

func kvproxyContainer(t *testing.T, r rendered) (corev1.PodSpec, corev1.Container, map[string]string) {
	t.Helper()
	spec := only[*appsv1.Deployment](t, r.objects).Spec.Template.Spec
	c := spec.Containers[0]
	return spec, c, envMap(t, c)
}

// mountOf returns the volume mounted at the directory holding file.
func mountOf(t *testing.T, spec corev1.PodSpec, c corev1.Container, file string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(file) {
			if m.SubPath != "" {
				t.Errorf("%s is mounted with subPath: the kubelet would never update it", file)
			}
			if !m.ReadOnly {
				t.Errorf("mount %s is writable", m.MountPath)
			}
			for _, v := range spec.Volumes {
				if v.Name == m.Name {
					return v
				}
			}
			t.Fatalf("mount %s names no volume %s", m.MountPath, m.Name)
		}
	}
	t.Fatalf("no volume mounted at %s (for %s)", path.Dir(file), file)
	return corev1.Volume{}
}

func TestChartServiceModeDefaults(t *testing.T) {
	r := render(t, values(t, minimal()))
	spec, _, env := kvproxyContainer(t, r)
	for name, want := range map[string]string{"KVPROXY_CLIENT_AUTH": "none", "KVPROXY_CLIENT_AUTH_AUDIENCE": "kvproxy", "KVPROXY_AUDIT_LOG": "false"} {
		if env[name] != want {
			t.Errorf("%s = %q by default, want %q", name, env[name], want)
		}
	}
	for _, name := range []string{"KVPROXY_CLIENT_AUTH_ISSUER", "KVPROXY_CLIENT_AUTH_TOKEN_FILE", "KVPROXY_ACCESS_POLICY_FILE", "KVPROXY_TLS_CERT_FILE", "KVPROXY_TLS_KEY_FILE"} {
		if _, ok := env[name]; ok {
			t.Errorf("%s set by default", name)
		}
	}
	if got := strings.Split(env["KVPROXY_ALLOWED_HOSTS"], ","); !slices.Equal(got, wantServiceNames) {
		t.Errorf("KVPROXY_ALLOWED_HOSTS = %q, want the Service's names %v", env["KVPROXY_ALLOWED_HOSTS"], wantServiceNames)
	}
	if len(spec.Volumes) != 0 || has[*corev1.ConfigMap](r.objects) {
		t.Errorf("default render has volumes %v and objects %v", spec.Volumes, r.kinds())
	}
	if !strings.Contains(r.notes, "set clientAuth.enabled") {
		t.Errorf("NOTES.txt does not point at client authentication:\n%s", r.notes)
	}
}

func TestChartClientAuth(t *testing.T) {
	r := render(t, values(t, minimal()+clientAuthValues))
	checkChartDeployment(t, r, kvproxyVariables(t))
	spec, c, env := kvproxyContainer(t, r)
	want := map[string]string{
		"KVPROXY_CLIENT_AUTH":            "kubernetes",
		"KVPROXY_CLIENT_AUTH_ISSUER":     "https://kubernetes.default.svc.cluster.local",
		"KVPROXY_CLIENT_AUTH_AUDIENCE":   "kvproxy",
		"KVPROXY_CLIENT_AUTH_TOKEN_FILE": serviceAccountTokenPath,
		"KVPROXY_AUDIT_LOG":              "true",
	}
	for name, v := range want {
		if env[name] != v {
			t.Errorf("%s = %q, want %q", name, env[name], v)
		}
	}

	// The policy: values → ConfigMap → a mounted file.
	policyFile := env["KVPROXY_ACCESS_POLICY_FILE"]
	v := mountOf(t, spec, c, policyFile)
	cm := only[*corev1.ConfigMap](t, r.objects)
	if v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || len(v.ConfigMap.Items) != 0 {
		t.Fatalf("policy volume %+v does not mount the ConfigMap %s whole", v, cm.Name)
	}
	var policy struct {
		Rules []struct {
			Subjects, Methods, Paths []string
		} `json:"rules"`
	}
	body, ok := cm.Data[path.Base(policyFile)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s: %v", cm.Name, path.Base(policyFile), sortedKeys(cm.Data))
	}
	if err := sigsyaml.UnmarshalStrict([]byte(body), &policy); err != nil {
		t.Fatalf("policy file: %v\n%s", err, body)
	}
	if len(policy.Rules) != 1 || !slices.Equal(policy.Rules[0].Subjects, []string{"system:serviceaccount:apps:web", "system:serviceaccount:batch:*"}) ||
		!slices.Equal(policy.Rules[0].Methods, []string{"GET"}) || !slices.Equal(policy.Rules[0].Paths, []string{"/secrets/db-*", "/secrets/app-config"}) {
		t.Errorf("policy file does not hold the values' rules:\n%s", body)
	}
	if _, ok := only[*appsv1.Deployment](t, r.objects).Spec.Template.Annotations["checksum/policy"]; ok {
		t.Error("a policy checksum annotation restarts pods on every rule change; kvproxy reloads the file itself")
	}

	// kvproxy's own API token, for the issuer's discovery and keys, is a
	// projected token with the cluster CA beside it; automount stays off.
	tv := mountOf(t, spec, c, serviceAccountTokenPath)
	if tv.Projected == nil {
		t.Fatalf("token volume %+v is not projected", tv)
	}
	var tok *corev1.ServiceAccountTokenProjection
	var ca bool
	for _, s := range tv.Projected.Sources {
		if s.ServiceAccountToken != nil {
			tok = s.ServiceAccountToken
		}
		if s.ConfigMap != nil && s.ConfigMap.Name == "kube-root-ca.crt" {
			ca = slices.ContainsFunc(s.ConfigMap.Items, func(k corev1.KeyToPath) bool { return k.Path == "ca.crt" })
		}
	}
	if tok == nil || tok.Path != "token" || tok.Audience != "" || tok.ExpirationSeconds == nil {
		t.Errorf("projected token %+v: want path token, the API server's audience, an expiry", tok)
	}
	if !ca {
		t.Error("the cluster CA (kube-root-ca.crt) is not projected beside the token")
	}

	for _, s := range []string{"Authorization: Bearer", "audience kvproxy", "1 rule(s)", "https://kvproxy.apps.svc:8380", `"msg":"audit"`} {
		if !strings.Contains(r.notes, s) {
			t.Errorf("NOTES.txt lacks %q:\n%s", s, r.notes)
		}
	}
	if strings.Contains(r.notes, "WARNING: TLS is off") || strings.Contains(r.notes, "WARNING: no rules") {
		t.Errorf("NOTES.txt warns wrongly:\n%s", r.notes)
	}
}

func TestChartClientAuthVariants(t *testing.T) {
	t.Run("public issuer without a token file", func(t *testing.T) {
		r := render(t, values(t, minimal()+"clientAuth: {enabled: true, issuer: 'https://westeurope.oic.prod-aks.azure.com/t/c/', tokenFile: '', audience: vault}\n"))
		spec, _, env := kvproxyContainer(t, r)
		if _, ok := env["KVPROXY_CLIENT_AUTH_TOKEN_FILE"]; ok {
			t.Error("token file set for a public issuer")
		}
		if env["KVPROXY_CLIENT_AUTH_AUDIENCE"] != "vault" || env["KVPROXY_CLIENT_AUTH_ISSUER"] != "https://westeurope.oic.prod-aks.azure.com/t/c/" {
			t.Errorf("env %v", env)
		}
		for _, v := range spec.Volumes {
			if v.Projected != nil {
				t.Errorf("API token projected without a token file: %+v", v)
			}
		}
		for _, s := range []string{"WARNING: no rules", "WARNING: TLS is off"} {
			if !strings.Contains(r.notes, s) {
				t.Errorf("NOTES.txt lacks %q:\n%s", s, r.notes)
			}
		}
	})
	t.Run("extra allowed hosts", func(t *testing.T) {
		r := render(t, values(t, minimal()+"config: {allowedHosts: [vault.example.internal]}\nclusterDomain: k8s.example\n"))
		_, _, env := kvproxyContainer(t, r)
		want := "kvproxy,kvproxy.apps,kvproxy.apps.svc,kvproxy.apps.svc.k8s.example,vault.example.internal"
		if env["KVPROXY_ALLOWED_HOSTS"] != want {
			t.Errorf("KVPROXY_ALLOWED_HOSTS = %q, want %q", env["KVPROXY_ALLOWED_HOSTS"], want)
		}
	})
}

func TestChartTLSExistingSecret(t *testing.T) {
	r := render(t, values(t, minimal()+"tls: {existingSecret: kvproxy-serving-cert}\n"))
	spec, c, env := kvproxyContainer(t, r)
	cert, key := env["KVPROXY_TLS_CERT_FILE"], env["KVPROXY_TLS_KEY_FILE"]
	if path.Dir(cert) != path.Dir(key) || path.Base(cert) != "tls.crt" || path.Base(key) != "tls.key" {
		t.Fatalf("cert %q key %q: want tls.crt and tls.key of one kubernetes.io/tls Secret", cert, key)
	}
	v := mountOf(t, spec, c, cert)
	if v.Secret == nil || v.Secret.SecretName != "kvproxy-serving-cert" {
		t.Errorf("TLS volume %+v does not mount the Secret kvproxy-serving-cert", v)
	}
	if !strings.Contains(r.notes, "https://kvproxy.apps.svc:8380") {
		t.Errorf("NOTES.txt does not give the https URL:\n%s", r.notes)
	}
}

// renderFiles renders the chart without decoding (the cert-manager kinds
// are not in the decoding scheme).
func renderFiles(t *testing.T, vals map[string]any, apiVersions ...string) (map[string]string, error) {
	t.Helper()
	ch := loadChart(t)
	helmLog.take()
	caps := common.DefaultCapabilities.Copy()
	caps.APIVersions = append(slices.Clone(caps.APIVersions), apiVersions...)
	rv, err := util.ToRenderValuesWithSchemaValidation(ch, vals,
		common.ReleaseOptions{Name: testRelease, Namespace: testNamespace, IsInstall: true, Revision: 1}, caps, false)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.RenderWithContext(t.Context(), ch, rv)
}

// certificate is the part of a cert-manager Certificate the chart writes.
type certificate struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		SecretName  string         `json:"secretName"`
		DNSNames    []string       `json:"dnsNames"`
		Duration    string         `json:"duration"`
		RenewBefore string         `json:"renewBefore"`
		Usages      []string       `json:"usages"`
		PrivateKey  map[string]any `json:"privateKey"`
		IssuerRef   struct {
			Name, Kind, Group string
		} `json:"issuerRef"`
	} `json:"spec"`
}

func TestChartTLSCertManager(t *testing.T) {
	vals := func() map[string]any {
		return values(t, minimal()+"tls: {certManager: {enabled: true, issuerRef: {name: cluster-ca}}}\n")
	}
	t.Run("with the CRD", func(t *testing.T) {
		files, err := renderFiles(t, vals(), certManagerAPIs...)
		if err != nil {
			t.Fatal(err)
		}
		var cert certificate
		if err := sigsyaml.UnmarshalStrict([]byte(files["kvproxy/templates/certificate.yaml"]), &cert); err != nil {
			t.Fatalf("Certificate: %v\n%s", err, files["kvproxy/templates/certificate.yaml"])
		}
		if cert.APIVersion != "cert-manager.io/v1" || cert.Kind != "Certificate" || cert.Metadata.Namespace != testNamespace {
			t.Errorf("Certificate header %+v", cert)
		}
		if !slices.Equal(cert.Spec.DNSNames, wantServiceNames) {
			t.Errorf("dnsNames %v, want %v", cert.Spec.DNSNames, wantServiceNames)
		}
		if cert.Spec.IssuerRef.Name != "cluster-ca" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" || !slices.Contains(cert.Spec.Usages, "server auth") {
			t.Errorf("spec %+v", cert.Spec)
		}
		objs, err := decodeDocuments("deployment", []byte(files["kvproxy/templates/deployment.yaml"]))
		if err != nil {
			t.Fatal(err)
		}
		d := only[*appsv1.Deployment](t, objs)
		spec := d.Spec.Template.Spec
		env := envMap(t, spec.Containers[0])
		v := mountOf(t, spec, spec.Containers[0], env["KVPROXY_TLS_CERT_FILE"])
		if v.Secret == nil || v.Secret.SecretName != cert.Spec.SecretName {
			t.Errorf("the pods mount %+v, the Certificate writes %s", v, cert.Spec.SecretName)
		}
	})
	t.Run("without the CRD", func(t *testing.T) {
		_, err := renderFiles(t, vals())
		if err == nil || !strings.Contains(err.Error(), "serves no cert-manager.io/v1") {
			t.Errorf("err = %v, want a failure naming the missing CRD (the pods would wait for a Secret nobody writes)", err)
		}
	})
	t.Run("forced", func(t *testing.T) {
		v := vals()
		maps.Copy(v["tls"].(map[string]any)["certManager"].(map[string]any), map[string]any{"force": true})
		files, err := renderFiles(t, v)
		if err != nil || !strings.Contains(files["kvproxy/templates/certificate.yaml"], "kind: Certificate") {
			t.Errorf("forced: err %v", err)
		}
	})
	t.Run("no issuer", func(t *testing.T) {
		_, err := renderFiles(t, values(t, minimal()+"tls: {certManager: {enabled: true}}\n"), certManagerAPIs...)
		if err == nil || !strings.Contains(err.Error(), "issuerRef.name is required") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("existing secret wins", func(t *testing.T) {
		files, err := renderFiles(t, values(t, minimal()+"tls: {existingSecret: s, certManager: {enabled: true, issuerRef: {name: x}}}\n"), certManagerAPIs...)
		if err != nil || strings.Contains(files["kvproxy/templates/certificate.yaml"], "Certificate") {
			t.Errorf("err %v; a Certificate rendered beside tls.existingSecret", err)
		}
	})
}

func TestChartServiceModeSchemaRejects(t *testing.T) {
	tests := []struct{ name, values, want string }{
		{"unknown clientAuth key", "clientAuth: {enable: true}\n", "enable"},
		{"plain http issuer", "clientAuth: {issuer: 'http://kubernetes.default.svc'}\n", "issuer"},
		{"unknown rule key", "accessPolicy: {rules: [{subjects: ['system:serviceaccount:a:b'], paths: [/secrets/x], path: [/x]}]}\n", "path"},
		{"rule without paths", "accessPolicy: {rules: [{subjects: ['system:serviceaccount:a:b']}]}\n", "paths"},
		{"subject not a service account", "accessPolicy: {rules: [{subjects: [admin], paths: [/secrets/x]}]}\n", "subjects"},
		{"method Key Vault does not use", "accessPolicy: {rules: [{subjects: ['system:serviceaccount:a:b'], methods: [TRACE], paths: [/secrets/x]}]}\n", "methods"},
		{"relative path", "accessPolicy: {rules: [{subjects: ['system:serviceaccount:a:b'], paths: [secrets/x]}]}\n", "paths"},
		{"unknown tls key", "tls: {secretName: x}\n", "secretName"},
		{"audit not a bool", "audit: {enabled: 'yes'}\n", "enabled"},
		{"host with a port", "config: {allowedHosts: ['kvproxy:8380']}\n", "allowedHosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := values(t, minimal())
			maps.Copy(v, values(t, tt.values))
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

// TestServiceClientExample: deploy/service-client is a client in another
// namespace sending a projected token with kvproxy's audience over TLS.
func TestServiceClientExample(t *testing.T) {
	objs := build(t, "service-client")
	d := only[*appsv1.Deployment](t, objs)
	spec := d.Spec.Template.Spec
	checkHardenedPod(t, "service-client", spec)
	sa := only[*corev1.ServiceAccount](t, objs)
	if spec.ServiceAccountName != sa.Name {
		t.Errorf("pods run as %q, the example creates %q", spec.ServiceAccountName, sa.Name)
	}
	if d.Spec.Template.Labels["kvproxy-client"] != "true" {
		t.Error(`pods lack kvproxy-client: "true" (the chart's NetworkPolicy admits only labelled pods)`)
	}
	var tok *corev1.ServiceAccountTokenProjection
	for _, v := range spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					tok = s.ServiceAccountToken
				}
			}
		}
	}
	if tok == nil || tok.Audience != "kvproxy" || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds > 3600*24 {
		t.Fatalf("projected token %+v: want audience kvproxy and a bounded expirationSeconds", tok)
	}
	c := spec.Containers[0]
	script := strings.Join(c.Command, " ")
	env := envMap(t, c)
	if !strings.HasPrefix(env["KVPROXY_URL"], "https://") || !strings.Contains(script, "Authorization: Bearer") || !strings.Contains(script, "--cacert") {
		t.Errorf("the client does not call kvproxy over TLS with its token: %s %v", script, env)
	}
}
