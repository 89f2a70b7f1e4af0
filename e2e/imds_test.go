package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
)

// IMDS is tested for real: azidentity calls it at 169.254.169.254 and
// cannot be pointed elsewhere, so TestIMDS creates a network namespace whose
// loopback holds that address and runs TestIMDSInNamespace there, in this
// test binary re-executed. Inside, the IMDS fake listens on
// 169.254.169.254:80, the vault fake on 127.0.0.1, and kvproxy runs with no
// IDENTITY_ENDPOINT: nothing leaves the namespace.

// The environment of the re-executed test binary: the marker that lets
// TestIMDSInNamespace run, and the kvproxy binary TestMain built.
const (
	imdsChildEnv  = "KVPROXY_E2E_IMDS_NAMESPACE"
	kvproxyBinEnv = "KVPROXY_E2E_BIN"
)

func TestIMDS(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the IMDS test needs a Linux network namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("the IMDS test needs root to create a network namespace holding 169.254.169.254 (ip netns add)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("the IMDS test needs the ip command (iproute2) to create a network namespace")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	ns := "kvp-imds-" + hex.EncodeToString(suffix)
	if out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("the IMDS test needs a network namespace and none can be created here (ip netns add: %v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { removeNamespace(t, ip, ns) })
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", "169.254.169.254/32", "dev", "lo"},
	} {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ip, "netns", "exec", ns, self,
		"-test.run", "^TestIMDSInNamespace$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), imdsChildEnv+"=1", kvproxyBinEnv+"="+kvproxyBin)
	out, err := cmd.CombinedOutput()
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		b.WriteString("ns| " + sc.Text() + "\n") // kept apart from this test's own result lines
	}
	t.Logf("TestIMDSInNamespace in network namespace %s:\n%s", ns, b.String())
	if err != nil {
		t.Fatalf("TestIMDSInNamespace failed in the namespace: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestIMDSInNamespace")) {
		t.Fatal("TestIMDSInNamespace did not pass in the namespace (skipped?)")
	}
}

// removeNamespace ends what still runs in the namespace (by pid: only what
// this test started can be there) and deletes it.
func removeNamespace(t *testing.T, ip, ns string) {
	out, err := exec.Command(ip, "netns", "pids", ns).Output()
	if err != nil {
		t.Errorf("ip netns pids %s: %v", ns, err)
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			t.Logf("killing process %d left in namespace %s", pid, ns)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", ns, err, out)
	}
}

// TestIMDSInNamespace runs only inside the namespace TestIMDS creates.
func TestIMDSInNamespace(t *testing.T) {
	if os.Getenv(imdsChildEnv) == "" {
		t.Skip("runs inside the network namespace TestIMDS creates")
	}
	// The cases share 169.254.169.254:80, so they run one after the other.
	t.Run("healthy", func(t *testing.T) {
		faults := new(azfake.IMDSFaults)
		imds := startIMDS(t, faults, true)
		release := faults.Hold() // the start-up fetch waits at IMDS
		t.Cleanup(release)
		f, p := startIMDSKV(t)
		azfaketest.Eventually(t, 20*time.Second, "kvproxy's first token request to reach IMDS", func() (bool, string) {
			return faults.Waiting() == 1, fmt.Sprintf("waiting=%d, requests=%d", faults.Waiting(), imds.Requests())
		})
		// Within 5s, far inside the 10s kvproxy gives one IMDS try.
		ok := coldReads(t, p, 200, 5*time.Second, func() {
			if got, w := imds.Requests(), faults.Waiting(); got != 1 || w != 1 {
				t.Errorf("with 200 reads waiting, IMDS has %d token requests (%d held), want 1", got, w)
			}
		}, release)
		if b := decodeSecret(t, p.get(t, "/secrets/db-password")); b.Value != seededValue {
			t.Errorf("value %q", b.Value)
		}
		if got := imds.Requests(); got != 1 {
			t.Errorf("IMDS received %d token requests for %d cold reads and one more, want 1", got, ok+1)
		}
		checkIMDSTokens(t, f, imds)
	})

	outage := []struct {
		name string
		fail func(*azfake.IMDSFaults) // IMDS listens, failing
		down bool                     // nothing listens on 169.254.169.254:80
		// lasts is how long after kvproxy's start IMDS stays out, at the
		// least: long enough for azidentity's own policy, had it been kept,
		// to wait 14s or more between two tries.
		lasts time.Duration
	}{
		{name: "answers 500 at start", fail: func(f *azfake.IMDSFaults) { f.FailWith(http.StatusInternalServerError) }},
		{name: "answers 503 at start", fail: func(f *azfake.IMDSFaults) { f.FailWith(http.StatusServiceUnavailable) }},
		{name: "refuses connections at start", down: true, lasts: 10 * time.Second},
	}
	for _, tt := range outage {
		t.Run(tt.name, func(t *testing.T) {
			faults := new(azfake.IMDSFaults)
			if !tt.down {
				tt.fail(faults)
			}
			imds := startIMDS(t, faults, !tt.down)
			launched := time.Now()
			f, p := startIMDSKV(t)

			// Measured from outside: one cold request while IMDS fails.
			start := time.Now()
			r := p.get(t, "/secrets/db-password")
			took := time.Since(start)
			e := checkRefusal(t, r, http.StatusServiceUnavailable, "token-unavailable")
			t.Logf("503 token-unavailable after %v (%v after kvproxy was launched): %s",
				took.Round(time.Millisecond), time.Since(launched).Round(time.Millisecond), e.Kvproxy.Detail)
			if took > 5*time.Second {
				t.Errorf("the cold request was answered after %v, want within 5s", took)
			}
			// Requests keep coming while the outage lasts; each is refused
			// promptly.
			var slowest time.Duration
			for i := 0; i < 100 && time.Since(launched) < tt.lasts; i++ {
				time.Sleep(200 * time.Millisecond)
				start := time.Now()
				checkRefusal(t, p.get(t, "/secrets/db-password"), http.StatusServiceUnavailable, "token-unavailable")
				slowest = max(slowest, time.Since(start))
			}
			if slowest > 5*time.Second {
				t.Errorf("a request during the outage was answered after %v, want within 5s", slowest)
			}
			if tt.lasts > 0 {
				t.Logf("during the %v outage, the slowest 503 took %v", tt.lasts, slowest.Round(time.Millisecond))
			}

			// IMDS comes back.
			if tt.down {
				if _, err := imds.Start(azfake.IMDSAddr); err != nil {
					t.Fatal(err)
				}
			} else {
				faults.FailWith(0)
			}
			recovered := readUntilOK(t, p, 10*time.Second)
			t.Logf("a read succeeded %v after IMDS came back", recovered.Round(time.Millisecond))
			if recovered > 5*time.Second {
				t.Errorf("reads failed for %v after IMDS came back, want a few seconds at most (5s)", recovered)
			}
			checkIMDSTokens(t, f, imds)
		})
	}
}

// startIMDS serves an IMDS with faults on 169.254.169.254:80 until the test
// ends; listening false leaves it down (call Start to bring it up).
func startIMDS(t *testing.T, faults *azfake.IMDSFaults, listening bool) *azfake.IMDS {
	t.Helper()
	imds := azfake.NewIMDS(azfake.IMDSOptions{Faults: faults})
	t.Cleanup(func() { _ = imds.Close() })
	if listening {
		if _, err := imds.Start(azfake.IMDSAddr); err != nil {
			t.Fatalf("listening on %s: %v", azfake.IMDSAddr, err)
		}
	}
	return imds
}

// startIMDSKV starts the vault (with an App Service identity endpoint that
// must stay unused) and kvproxy with managed identity and no
// IDENTITY_ENDPOINT: azidentity's IMDS.
func startIMDSKV(t *testing.T) (*fakes, *proc) {
	t.Helper()
	f := newFakes(t, azfake.VaultOptions{}, azfake.IdentityOptions{})
	return f, startKV(t, f, map[string]string{"IDENTITY_ENDPOINT": "", "IDENTITY_HEADER": ""})
}

// checkIMDSTokens checks that the tokens the vault received came from IMDS.
func checkIMDSTokens(t *testing.T, f *fakes, imds *azfake.IMDS) {
	t.Helper()
	if n := f.IDs.Requests(); n != 0 {
		t.Errorf("the App Service identity endpoint received %d requests; kvproxy was to use IMDS", n)
	}
	reqs := tokenRequests(f.Vault)
	if len(reqs) == 0 || imds.Issued() == 0 {
		t.Fatalf("the vault received %d requests with a token, IMDS issued %d tokens", len(reqs), imds.Issued())
	}
	for _, r := range reqs {
		if r.Claims == nil || r.Claims.ObjectID != azfake.DefaultObjectID {
			t.Fatalf("the vault received a token not of IMDS's identity: %+v", r.Claims)
		}
	}
}

// readUntilOK reads db-password until it succeeds, polling every 50ms for
// at most d, and returns how long that took.
func readUntilOK(t *testing.T, p *proc, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for i := 0; i < 1000 && time.Since(start) < d; i++ {
		r, err := p.try(http.MethodGet, "/secrets/db-password", md(), nil)
		if err == nil && r.Status == http.StatusOK {
			if b := decodeSecret(t, r); b.Value != seededValue {
				t.Fatalf("value %q", b.Value)
			}
			return time.Since(start)
		}
		last = fmt.Sprintf("status %d, error %v, body %s", r.Status, err, r.Body)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no successful read within %v; last: %s", d, last)
	return 0
}
