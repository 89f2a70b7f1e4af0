package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// identityHeader is the X-IDENTITY-HEADER secret shared by the identity
// fake and the binary.
const identityHeader = "h"

// vaultScope is the token scope the binary is given: 127.0.0.1 has no known
// Key Vault suffix, so it cannot be derived.
const vaultScope = "https://vault.azure.net/.default"

// seededValue is the value azfake.NewVault seeds db-password with.
const seededValue = "correct-horse-battery-staple"

// --- the Azure side -------------------------------------------------------

// fakes are the Azure services one test runs: a vault over TLS and a
// managed identity endpoint, with their controls and the CA file the binary
// trusts.
type fakes struct {
	TLS      *azfake.TLS
	CAFile   string
	Vault    *azfaketest.Vault
	VaultURL string // https://127.0.0.1:PORT, or what serveVaultWith serves
	IDs      *azfaketest.Identity
	IDURL    string // http://127.0.0.1:PORT/msi/token
}

// newFakes starts a vault and an identity endpoint for one test.
func newFakes(t *testing.T, vo azfake.VaultOptions, io azfake.IdentityOptions) *fakes {
	t.Helper()
	tl := azfaketest.NewTLS(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := tl.WriteCAFile(ca); err != nil {
		t.Fatal(err)
	}
	v := azfaketest.StartVault(t, tl, vo)
	if io.Header == "" {
		io.Header = identityHeader
	}
	ids := azfaketest.StartIdentity(t, io)
	return &fakes{TLS: tl, CAFile: ca, Vault: v, VaultURL: v.URL, IDs: ids, IDURL: ids.URL}
}

// baseEnv is what every run of the binary gets: no AZURE_*, IDENTITY_* or
// KVPROXY_* variable of the test process leaks in.
func baseEnv() map[string]string {
	return map[string]string{
		"PATH": os.Getenv("PATH"),
		"HOME": os.Getenv("HOME"),
	}
}

// env is the environment of a kvproxy using the fakes' managed identity,
// listening on ephemeral ports; overrides are applied last ("" deletes).
func (f *fakes) env(overrides map[string]string) map[string]string {
	e := baseEnv()
	maps.Copy(e, map[string]string{
		"IDENTITY_ENDPOINT":   f.IDURL,
		"IDENTITY_HEADER":     identityHeader,
		"SSL_CERT_FILE":       f.CAFile,
		"KVPROXY_VAULT_URL":   f.VaultURL,
		"KVPROXY_TOKEN_SCOPE": vaultScope,
		"KVPROXY_CREDENTIAL":  "managed-identity",
		"KVPROXY_LISTEN_ADDR": "127.0.0.1:0",
		"KVPROXY_ADMIN_ADDR":  "127.0.0.1:0",
	})
	for k, v := range overrides {
		if v == "" {
			delete(e, k)
		} else {
			e[k] = v
		}
	}
	return e
}

// vaultHostPort is the vault's host:port.
func (f *fakes) vaultHostPort() string { return strings.TrimPrefix(f.VaultURL, "https://") }

// tokenRequests returns the vault's recorded requests that carried a token.
func tokenRequests(v *azfaketest.Vault) []azfake.RecordedRequest {
	var out []azfake.RecordedRequest
	for _, r := range v.Requests() {
		if r.Token != "" {
			out = append(out, r)
		}
	}
	return out
}

// workloadEnv configures kvproxy for workload identity against the Entra
// stand-in at authority.
func workloadEnv(credential, authority, clientID, tokenFile string) map[string]string {
	return map[string]string{
		"KVPROXY_CREDENTIAL":                 credential,
		"AZURE_AUTHORITY_HOST":               authority,
		"AZURE_TENANT_ID":                    azfake.DefaultTenantID,
		"AZURE_CLIENT_ID":                    clientID,
		"AZURE_FEDERATED_TOKEN_FILE":         tokenFile,
		"KVPROXY_DISABLE_INSTANCE_DISCOVERY": "true",
		// The managed identity endpoint stays configured: it must not be used.
	}
}

// timedVault serves an azfake vault and records, for every request, when it
// arrived, the token it carried and the status answered.
type timedVault struct {
	v   http.Handler
	mu  sync.Mutex
	log []timedRequest
}

type timedRequest struct {
	at     time.Time
	token  string
	status int
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (tv *timedVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sr := &statusRecorder{ResponseWriter: w}
	tv.v.ServeHTTP(sr, r)
	if sr.status == 0 {
		sr.status = http.StatusOK
	}
	tv.mu.Lock()
	tv.log = append(tv.log, timedRequest{at: at, token: tok, status: sr.status})
	tv.mu.Unlock()
}

// startTimedVault serves f.Vault through a timedVault and points
// f.VaultURL at it.
func startTimedVault(t *testing.T, f *fakes) *timedVault {
	t.Helper()
	tv := &timedVault{v: f.Vault}
	serveVaultWith(t, f, tv)
	return tv
}

// serveVaultWith serves h (which usually wraps f.Vault) over TLS with the
// fakes' certificate on its own listener and points f.VaultURL at it.
func serveVaultWith(t *testing.T, f *fakes, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tls.NewListener(ln, f.TLS.ServerConfig.Clone())) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	f.VaultURL = "https://" + ln.Addr().String()
}

// --- the binary -----------------------------------------------------------

// proc is one run of the kvproxy binary.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *azfaketest.SyncBuffer
	stderr *azfaketest.SyncBuffer
	done   chan struct{}
	err    error // cmd.Wait's result; read only after done is closed

	// Listen and Admin are the addresses from the start-up log line.
	Listen, Admin string
	client        *http.Client
}

// launch starts the binary with exactly env and args and returns at once.
// The process is killed when the test ends, if it is still running.
func launch(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	keys := slices.Sorted(maps.Keys(env))
	environ := make([]string, 0, len(keys))
	for _, k := range keys {
		environ = append(environ, k+"="+env[k])
	}
	cmd := exec.Command(kvproxyBin, args...)
	cmd.Env = environ
	cmd.Dir = t.TempDir()
	p := &proc{t: t, cmd: cmd, stdout: &azfaketest.SyncBuffer{}, stderr: &azfaketest.SyncBuffer{}, done: make(chan struct{})}
	// Reading stderr and stdout into the buffers happens in goroutines
	// os/exec starts; Wait returns after they have copied everything.
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kvproxy: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if p.client != nil {
			p.client.CloseIdleConnections()
		}
		if i := strings.Index(p.stderr.String(), "WARNING: DATA RACE"); i >= 0 {
			t.Errorf("the race detector fired inside kvproxy:\n%s", tail(p.stderr.String()[i:], 6<<10))
		}
		if t.Failed() {
			t.Logf("kvproxy %v stderr (tail):\n%s", args, tail(p.stderr.String(), 3<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// startKV runs `kvproxy` against f and waits until it is listening and has
// asked the vault for its challenge; the vault's recorded requests are then
// reset, so a test sees only what its own requests cause.
func startKV(t *testing.T, f *fakes, overrides map[string]string) *proc {
	t.Helper()
	p := launch(t, f.env(overrides))
	p.waitStarted(t)
	p.waitLog(t, func(l logLine) bool {
		m := l.Msg()
		return m == "vault challenge" || strings.HasPrefix(m, "could not learn the vault's challenge") ||
			strings.HasPrefix(m, "refusing the vault's challenge")
	}, 20*time.Second, "the vault challenge discovery")
	f.Vault.ResetRequests()
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to end and returns its exit code.
func (p *proc) wait(d time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
	case <-time.After(d):
		return 0, false
	}
	if p.err == nil {
		return 0, true
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), true
	}
	return -1, true
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling kvproxy: %v", err)
	}
}

// logLine is one JSON log record.
type logLine map[string]any

// Msg returns the record's msg.
func (l logLine) Msg() string { s, _ := l["msg"].(string); return s }

// Str returns a string attribute.
func (l logLine) Str(k string) string { s, _ := l[k].(string); return s }

// logLines parses every JSON line the process wrote to stderr so far.
func (p *proc) logLines() []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits until a log record matches, or fails the test.
func (p *proc) waitLog(t *testing.T, match func(logLine) bool, d time.Duration, what string) logLine {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range p.logLines() {
			if match(l) {
				return l
			}
		}
		if p.exited() {
			code, _ := p.wait(0)
			t.Fatalf("kvproxy exited (code %d) before logging %s", code, what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvproxy did not log %s within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitStarted waits for the start-up log line and reads the listeners'
// addresses from it.
func (p *proc) waitStarted(t *testing.T) {
	t.Helper()
	l := p.waitLog(t, func(l logLine) bool { return l.Msg() == "kvproxy started" }, 20*time.Second, "its start-up line")
	p.Listen, p.Admin = l.Str("listen"), l.Str("admin")
	if p.Listen == "" || p.Admin == "" {
		t.Fatalf("start-up line without listen/admin addresses: %v", l)
	}
	p.client = newClient(p.Listen)
}

// newClient returns a client for the proxy listener at addr (host:port or
// unix:///path). It never uses an HTTP proxy from the environment.
func newClient(addr string) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		d := &net.Dialer{Timeout: 5 * time.Second}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", path) }
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// proxyURL is the URL of path on the proxy listener.
func (p *proc) proxyURL(path string) string {
	if strings.HasPrefix(p.Listen, "unix://") {
		return "http://kvproxy" + path
	}
	return "http://" + p.Listen + path
}

// response is an answer read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	// ContentLength is the parsed Content-Length (-1 when absent).
	ContentLength int64
}

// do sends a request to the proxy listener and reads the answer.
func (p *proc) do(t *testing.T, method, path string, header http.Header, body io.Reader) response {
	t.Helper()
	r, err := p.try(method, path, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// try is do that returns transport errors.
func (p *proc) try(method, path string, header http.Header, body io.Reader) (response, error) {
	req, err := http.NewRequest(method, p.proxyURL(path), body)
	if err != nil {
		return response{}, err
	}
	for k, vs := range header {
		for _, v := range vs {
			if strings.EqualFold(k, "Host") {
				req.Host = v
				continue
			}
			req.Header.Add(k, v)
		}
	}
	return doRequest(p.client, req)
}

func doRequest(c *http.Client, req *http.Request) (response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, ContentLength: resp.ContentLength}, nil
}

// md is the header every well-behaved client sends.
func md() http.Header { return http.Header{"Metadata": {"true"}} }

// get sends GET path with Metadata: true.
func (p *proc) get(t *testing.T, path string) response {
	t.Helper()
	return p.do(t, http.MethodGet, path, md(), nil)
}

// adminGet sends GET path to the admin listener.
func (p *proc) adminGet(path string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+p.Admin+path, nil)
	if err != nil {
		return response{}, err
	}
	return doRequest(adminClient, req)
}

var adminClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableCompression: true},
	Timeout:   10 * time.Second,
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	azfaketest.Eventually(t, d, "/readyz to answer 200", func() (bool, string) {
		r, err := p.adminGet("/readyz")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusOK, string(r.Body)
	})
}

// rawRequest writes raw to the proxy listener over a new TCP connection and
// reads one response.
func rawRequest(t *testing.T, addr, raw string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", firstLineOf(raw), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, ContentLength: resp.ContentLength}
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// --- kvproxy's answers ----------------------------------------------------

// kvError is the body kvproxy answers with when it refuses or diagnoses:
// Key Vault's "error" object and kvproxy's own member.
type kvError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
	Kvproxy *diagnosis `json:"kvproxy"`
}

// diagnosis is the "kvproxy" member of an answer.
type diagnosis struct {
	Diagnosis string `json:"diagnosis"`
	Detail    string `json:"detail"`
	Identity  struct {
		TenantID string `json:"tid"`
		ObjectID string `json:"oid"`
		AppID    string `json:"appid"`
	} `json:"identity"`
	Vault            string `json:"vault"`
	RequestID        string `json:"requestId"`
	VaultCode        string `json:"vaultCode"`
	ClientAddress    string `json:"clientAddress"`
	Action           string `json:"action"`
	SuggestedRole    string `json:"suggestedRole"`
	Permission       string `json:"permission"`
	ExpectedTenant   string `json:"expectedTenant"`
	ActualTenant     string `json:"actualTenant"`
	ExpectedAudience string `json:"expectedAudience"`
	ActualAudience   string `json:"actualAudience"`
	TokenExpiresAt   string `json:"tokenExpiresAt"`
	Fix              string `json:"fix"`
}

// decodeError parses an error body, failing the test when it is not one.
func decodeError(t *testing.T, r response) kvError {
	t.Helper()
	var e kvError
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("answer %d is not a JSON error body: %v\n%s", r.Status, err, r.Body)
	}
	return e
}

// checkRefusal asserts an answer kvproxy gave itself: status, diagnosis
// header, a JSON body naming the diagnosis with a detail, a Content-Length
// that matches.
func checkRefusal(t *testing.T, r response, status int, diag string) kvError {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	if got := r.Header.Get("X-Kvproxy-Diagnosis"); got != diag {
		t.Errorf("X-Kvproxy-Diagnosis %q, want %q", got, diag)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if r.ContentLength != int64(len(r.Body)) {
		t.Errorf("Content-Length %d (-1: absent), body %d bytes", r.ContentLength, len(r.Body))
	}
	e := decodeError(t, r)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Errorf("error object without code or message: %s", r.Body)
	}
	if e.Kvproxy == nil {
		t.Fatalf("no kvproxy member in %s", r.Body)
	}
	if e.Kvproxy.Diagnosis != diag {
		t.Errorf("kvproxy.diagnosis %q, want %q", e.Kvproxy.Diagnosis, diag)
	}
	if strings.TrimSpace(e.Kvproxy.Detail) == "" {
		t.Errorf("kvproxy.detail is empty: %s", r.Body)
	}
	return e
}

// secretBundle is the part of Key Vault's secret answer the tests read.
type secretBundle struct {
	Value string `json:"value"`
	ID    string `json:"id"`
}

func decodeSecret(t *testing.T, r response) secretBundle {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", r.Status, r.Body)
	}
	var b secretBundle
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("secret body: %v\n%s", err, r.Body)
	}
	return b
}

// --- metrics --------------------------------------------------------------

// metricsOf scrapes and parses the admin listener's /metrics.
func (p *proc) metricsOf(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	r, err := p.adminGet("/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", r.Status, r.Body)
	}
	return parseMetrics(t, r.Body)
}

func parseMetrics(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, b)
	}
	return mfs
}

// metricValue returns the value of the counter, gauge or untyped series of
// family name whose labels include want, and whether it exists. For a
// histogram it returns the sample count.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// metric is metricValue that treats a missing series as 0.
func metric(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	v, _ := metricValue(mfs, name, want)
	return v
}
