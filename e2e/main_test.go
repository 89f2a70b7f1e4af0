// Package e2e tests the kvproxy binary end to end: it is built once, run as
// a subprocess with an explicit environment, and pointed at the local Azure
// fakes of internal/azfake (a Key Vault over TLS, the App Service managed
// identity endpoint and a Microsoft Entra stand-in), which run in the test
// process. Everything listens on 127.0.0.1, except IMDS, which TestIMDS
// serves at 169.254.169.254 in a network namespace of its own.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// kvproxyBin is the path of the binary TestMain builds.
var kvproxyBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if bin := os.Getenv(kvproxyBinEnv); bin != "" {
		// This test binary was re-executed by a test of its own (TestIMDS,
		// in a network namespace): use the binary its parent built.
		kvproxyBin = bin
		return m.Run()
	}
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the module root is not the parent of the test's directory:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "kvproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvproxyBin = filepath.Join(dir, "kvproxy")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is not on PATH:", err)
		return 1
	}
	args := []string{"build", "-o", kvproxyBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(goTool, append(args, "./cmd/kvproxy")...)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building kvproxy:", err)
		return 1
	}
	return m.Run()
}
