package k8stest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// targetLabels are labels Prometheus or the Prometheus Operator attach to
// every scraped series; queries may group by them.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "container", "endpoint"}

// loadRulesFile decodes deploy/monitoring/kvproxy.rules.yaml strictly, as
// the spec of a PrometheusRule (the same shape as a Prometheus rule file).
func loadRulesFile(t *testing.T) monitoringv1.PrometheusRuleSpec {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "monitoring", "kvproxy.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := sigsyaml.UnmarshalStrict(raw, &spec); err != nil {
		t.Fatalf("kvproxy.rules.yaml: %v", err)
	}
	return spec
}

// TestAlertRules checks the alerts the issue asks for exist, are well
// formed, and query only metrics and labels kvproxy exports.
func TestAlertRules(t *testing.T) {
	spec := loadRulesFile(t)
	q := newPromQLChecker(t)
	alerts := map[string]monitoringv1.Rule{}
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s holds a non-alert rule %+v", g.Name, r)
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = r
			expr := r.Expr.String()
			q.check(t, "alert "+r.Alert, expr)
			if r.For == nil {
				t.Errorf("alert %s has no for: a single scrape would page", r.Alert)
			} else if _, err := time.ParseDuration(string(*r.For)); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, *r.For, err)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks summary or description", r.Alert)
			}
		}
	}
	// What each required alert must look at.
	required := map[string][]string{
		"KvproxyTokenExpiringRefreshFailing": {"kvproxy_token_expiry_timestamp_seconds", "time()", "30 * 60", `kvproxy_token_acquisitions_total{result="error"}`},
		"KvproxyForbidden":                   {"kvproxy_diagnoses_total", `diagnosis=~"forbidden.*"`},
		"KvproxyUpstreamUnavailable":         {"kvproxy_diagnoses_total", `diagnosis="upstream-unavailable"`, "kvproxy_requests_total"},
		"KvproxyNotReady":                    {"kvproxy_ready == 0"},
	}
	for name, parts := range required {
		r, ok := alerts[name]
		if !ok {
			t.Errorf("alert %s missing", name)
			continue
		}
		for _, p := range parts {
			if !strings.Contains(r.Expr.String(), p) {
				t.Errorf("alert %s expression lacks %q:\n%s", name, p, r.Expr.String())
			}
		}
	}
	// The 403 alert must cover every forbidden* diagnosis kvproxy emits.
	if r, ok := alerts["KvproxyForbidden"]; ok {
		m := regexp.MustCompile(`diagnosis=~"([^"]*)"`).FindStringSubmatch(r.Expr.String())
		if m == nil {
			t.Fatal("KvproxyForbidden has no diagnosis regex")
		}
		re := regexp.MustCompile("^(?:" + m[1] + ")$")
		for _, code := range diagnosisCodes(t) {
			if strings.HasPrefix(code, "forbidden") && !re.MatchString(code) {
				t.Errorf("KvproxyForbidden misses the diagnosis %s", code)
			}
		}
	}
}

// TestAlertRulesPromtool checks the rule file with Prometheus' own parser
// when promtool is installed (Debian's prometheus package); the checks
// above run everywhere.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus); PromQL checked by TestAlertRules only")
	}
	out, err := exec.Command(promtool, "check", "rules", filepath.Join(deployDir, "monitoring", "kvproxy.rules.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestPrometheusRuleManifest: prometheusrule.yaml carries the rule file's groups.
func TestPrometheusRuleManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "monitoring", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeDocuments("prometheusrule.yaml", raw)
	if err != nil {
		t.Fatal(err)
	}
	pr := only[*monitoringv1.PrometheusRule](t, objs)
	if want := loadRulesFile(t); !reflect.DeepEqual(pr.Spec, want) {
		t.Error("deploy/monitoring/prometheusrule.yaml differs from kvproxy.rules.yaml: regenerate it as its header says")
	}
}

// grafanaDashboard is the part of Grafana's dashboard JSON the test reads.
type grafanaDashboard struct {
	Title      string         `json:"title"`
	UID        string         `json:"uid"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

// TestDashboard checks the Grafana dashboard: valid JSON, a sane layout,
// queries over kvproxy's real metrics and labels, and every metric kvproxy
// exports shown somewhere.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "monitoring", "kvproxy-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	vars := map[string]bool{"__rate_interval": true, "__interval": true}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	q := newPromQLChecker(t)
	ids := map[int]bool{}
	used := map[string]bool{}
	var boxes []grafanaPanel
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		for _, b := range boxes {
			if overlap(b, p) {
				t.Errorf("panels %q and %q overlap", b.Title, p.Title)
			}
		}
		boxes = append(boxes, p)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] {
					t.Errorf("panel %q uses undefined variable $%s", p.Title, m[1])
				}
			}
			for _, name := range q.check(t, fmt.Sprintf("panel %q", p.Title), tg.Expr) {
				used[name] = true
			}
		}
	}
	for name := range q.metrics {
		if !used[name] {
			t.Errorf("the dashboard never shows %s", name)
		}
	}
	// The panels the issue asks for.
	wantTitles := []string{"Requests by status code", "Request latency", "Token expiry countdown", "Token acquisitions", "Diagnoses by code", "Upstream retries by reason"}
	var titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
	}
	for _, w := range wantTitles {
		if !slices.Contains(titles, w) {
			t.Errorf("dashboard lacks the panel %q", w)
		}
	}
}

func overlap(a, b grafanaPanel) bool {
	return a.GridPos.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < a.GridPos.X+a.GridPos.W &&
		a.GridPos.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < a.GridPos.Y+a.GridPos.H
}

// promQLChecker validates PromQL against kvproxy's metrics without a full
// PromQL parser (Prometheus' own is a very heavy dependency): balanced
// brackets and quotes, metric names that exist (histogram series included),
// label matchers and groupings over labels those metrics or the scrape
// carry, and diagnosis/result values kvproxy can emit.
type promQLChecker struct {
	metrics   map[string]metric
	diagnoses []string
	results   []string
}

func newPromQLChecker(t *testing.T) *promQLChecker {
	t.Helper()
	return &promQLChecker{
		metrics:   kvproxyMetrics(t),
		diagnoses: diagnosisCodes(t),
		results:   tokenResults(t),
	}
}

var (
	metricRE   = regexp.MustCompile(`\b(kvproxy_[a-z0-9_]+)\s*(\{([^}]*)\})?`)
	matcherRE  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
)

// check validates one expression and returns the base metric names it uses.
func (q *promQLChecker) check(t *testing.T, where, expr string) []string {
	t.Helper()
	if err := balanced(expr); err != nil {
		t.Errorf("%s: %v in %s", where, err, expr)
	}
	labelsInExpr := map[string]bool{}
	var names []string
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		series := m[1]
		base, isBucket := q.resolve(series)
		if base == "" {
			t.Errorf("%s: %s is not a metric kvproxy exports (metrics/ defines %v)", where, series, sortedKeys(q.metrics))
			continue
		}
		names = append(names, base)
		allowed := slices.Concat(q.metrics[base].Labels, targetLabels)
		if isBucket {
			allowed = append(allowed, "le")
		}
		for _, l := range allowed {
			labelsInExpr[l] = true
		}
		if m[3] == "" {
			continue
		}
		for _, part := range splitMatchers(m[3]) {
			mm := matcherRE.FindStringSubmatch(part)
			if mm == nil {
				t.Errorf("%s: cannot read matcher %q", where, part)
				continue
			}
			label, op, value := mm[1], mm[2], mm[3]
			if !slices.Contains(allowed, label) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, base, label, allowed)
				continue
			}
			if strings.Contains(value, "$") {
				continue // a dashboard variable
			}
			switch label {
			case "diagnosis":
				q.checkValue(t, where, label, op, value, q.diagnoses)
			case "result":
				q.checkValue(t, where, label, op, value, q.results)
			}
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[2], ",") {
			l = strings.TrimSpace(l)
			if l != "" && !labelsInExpr[l] {
				t.Errorf("%s: %s (%s) names a label none of its metrics carry", where, g[1], l)
			}
		}
	}
	return names
}

// resolve maps a series name to its metric, accepting histogram series.
func (q *promQLChecker) resolve(series string) (base string, bucket bool) {
	if _, ok := q.metrics[series]; ok {
		return series, false
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(series, suffix); ok {
			if m, ok := q.metrics[b]; ok && m.Kind == "histogram" {
				return b, suffix == "_bucket"
			}
		}
	}
	return "", false
}

// checkValue: an equality matcher must name a known value; a regex must
// match at least one, and each plain alternative must be known.
func (q *promQLChecker) checkValue(t *testing.T, where, label, op, value string, known []string) {
	t.Helper()
	switch op {
	case "=", "!=":
		if !slices.Contains(known, value) {
			t.Errorf("%s: %s=%q is never emitted (known: %v)", where, label, value, known)
		}
	case "=~", "!~":
		re, err := regexp.Compile("^(?:" + value + ")$")
		if err != nil {
			t.Errorf("%s: %s=~%q: %v", where, label, value, err)
			return
		}
		n := 0
		for _, k := range known {
			if re.MatchString(k) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: %s=~%q matches no value kvproxy emits (%v)", where, label, value, known)
		}
		for _, alt := range strings.Split(value, "|") {
			if regexp.QuoteMeta(alt) == alt && !slices.Contains(known, alt) {
				t.Errorf("%s: %s alternative %q is never emitted", where, label, alt)
			}
		}
	}
}

func splitMatchers(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(s):
			cur.WriteByte(c)
			i++
			cur.WriteByte(s[i])
			continue
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			if strings.TrimSpace(cur.String()) != "" {
				out = append(out, cur.String())
			}
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

// balanced checks (), [], {} and double quotes.
func balanced(expr string) error {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if inQuote {
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
			continue
		}
		switch c {
		case '"':
			inQuote = true
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %q at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return fmt.Errorf("unclosed %q", string(stack))
	}
	return nil
}
