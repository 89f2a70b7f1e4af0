// Package examples_test runs every client in examples/ whose runtime is
// installed against the playground (`kvproxy dev`): each must read a
// secret, page the list through nextLink and show kvproxy's diagnosis of a
// 403.
package examples_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startPlayground builds kvproxy and runs `kvproxy dev` on free ports until
// the test ends; it returns the proxy's base URL once kvproxy is ready.
func startPlayground(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kvproxy")
	build := exec.Command("go", "build", "-o", bin, "../cmd/kvproxy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "dev")
	cmd.Env = append(os.Environ(), "KVPROXY_LISTEN_ADDR=127.0.0.1:0", "KVPROXY_ADMIN_ADDR=127.0.0.1:0")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait() //nolint:errcheck // interrupted on purpose
		if t.Failed() {
			t.Logf("kvproxy dev stderr:\n%s", stderr.String())
		}
	})
	var proxyURL, adminURL string
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "proxy" {
				proxyURL = f[1]
			}
			if len(f) >= 2 && f[0] == "admin" {
				adminURL = f[1]
				close(found)
			}
		}
		io.Copy(io.Discard, stdout) //nolint:errcheck
	}()
	select {
	case <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("kvproxy dev printed no banner in 30s\n%s", stderr.String())
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(adminURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return proxyURL
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvproxy dev not ready in 30s\n%s", stderr.String())
		}
	}
}

// example is one client: the runtimes it needs and how to run it.
type example struct {
	name  string
	needs []string
	args  []string
}

var examples = []example{
	{name: "python", needs: []string{"python3"}, args: []string{"python3", "python/example.py"}},
	{name: "node", needs: []string{"node"}, args: []string{"node", "node/example.mjs"}},
	{name: "java", needs: []string{"java"}, args: []string{"java", "java/KvproxyExample.java"}},
	{name: "go", needs: []string{"go"}, args: []string{"go", "run", "./go"}},
	{name: "shell", needs: []string{"bash", "curl", "jq"}, args: []string{"bash", "shell/example.sh"}},
	{name: "dotnet", needs: []string{"dotnet"}, args: []string{"dotnet", "run", "--project", "dotnet"}},
}

func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the playground and every runtime; skipped with -short")
	}
	base := startPlayground(t)
	listed := regexp.MustCompile(`(?m)^listed (\d+) secrets in (\d+) pages$`)
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			for _, n := range ex.needs {
				if _, err := exec.LookPath(n); err != nil {
					t.Skipf("%s not installed: the %s example is not run here", n, ex.name)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, ex.args[0], ex.args[1:]...)
			cmd.Env = append(os.Environ(), "KVPROXY_URL="+base)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%q: %v\nstdout:\n%s\nstderr:\n%s", ex.args, err, out, stderr.String())
			}
			got := string(out)
			if !strings.Contains(got, "db-password: correct-horse-battery-staple\n") {
				t.Errorf("did not read db-password:\n%s", got)
			}
			m := listed.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("no \"listed N secrets in P pages\" line:\n%s", got)
			}
			n, _ := strconv.Atoi(m[1])
			pages, _ := strconv.Atoi(m[2])
			// One secret a page: every secret is on its own page, so the
			// client followed nextLink to the end.
			if n < 2 || pages != n {
				t.Errorf("listed %d secrets in %d pages, want >= 2 secrets one a page", n, pages)
			}
			for p := 1; p <= pages; p++ {
				if !strings.Contains(got, fmt.Sprintf("page %d: ", p)) {
					t.Errorf("no line for page %d:\n%s", p, got)
				}
			}
			for _, name := range []string{"db-password", "api-key"} {
				if !regexp.MustCompile(`(?m)^page \d+: ` + name + `$`).MatchString(got) {
					t.Errorf("the list shows no %s (names come from the path of each item's id):\n%s", name, got)
				}
			}
			if !regexp.MustCompile(`(?m)^forbidden-rbac: 403 forbidden-by-rbac: The vault uses Azure RBAC`).MatchString(got) {
				t.Errorf("the 403 is not shown with kvproxy's diagnosis:\n%s", got)
			}
		})
	}
}
