// Package harness holds what the tools (bench, load, soak) share to run the
// kvproxy binary on this machine against the azfake stand-ins and to watch
// it: free loopback ports, its environment, readiness, its memory from
// /proc and its metrics from the admin listener. Everything talks to
// 127.0.0.1 only, and every wait is bounded.
package harness

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Upstream says where kvproxy finds its vault and its managed identity
// endpoint (the App Service protocol of azfake.IdentityServer).
type Upstream struct {
	VaultURL       string // https://127.0.0.1:PORT
	IdentityURL    string // IDENTITY_ENDPOINT
	IdentityHeader string // IDENTITY_HEADER
	CAFile         string // SSL_CERT_FILE: the CA the vault's certificate chains to
}

// Env returns base followed by the variables that point kvproxy at u with
// its managed identity credential, listening on 127.0.0.1:listen and
// 127.0.0.1:admin at log level info, then extra (later entries win).
func (u Upstream) Env(base []string, listen, admin int, extra ...string) []string {
	return append(append(base,
		"KVPROXY_VAULT_URL="+u.VaultURL,
		"KVPROXY_TOKEN_SCOPE=https://vault.azure.net/.default",
		"KVPROXY_CREDENTIAL=managed-identity",
		"IDENTITY_ENDPOINT="+u.IdentityURL, "IDENTITY_HEADER="+u.IdentityHeader,
		fmt.Sprintf("KVPROXY_LISTEN_ADDR=127.0.0.1:%d", listen),
		fmt.Sprintf("KVPROXY_ADMIN_ADDR=127.0.0.1:%d", admin),
		"KVPROXY_LOG_LEVEL=info", "SSL_CERT_FILE="+u.CAFile), extra...)
}

// WaitReady polls url (kvproxy's /readyz) until it answers 200, for at most d.
func WaitReady(url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kvproxy not ready within %v", d)
}

// StatusMiB sums a /proc/<pid>/status field given in kB (VmRSS, VmHWM) of
// the processes, in MiB. Processes that are gone count 0.
func StatusMiB(pids []int, field string) float64 {
	var kb float64
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
				n, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				kb += n
			}
		}
		f.Close()
	}
	return kb / 1024
}

// MetricSum reads admin+"/metrics" (Prometheus text format) and sums the
// samples of the metric name over all its label sets: 0 when it shows none
// (a counter vector before its first increment).
func MetricSum(admin, name string) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: %s", admin, resp.Status)
	}
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s/metrics: %q: %w", admin, line, err)
		}
		total += v
	}
	return total, sc.Err()
}
