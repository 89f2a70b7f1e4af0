// Command kvproxy is a token-brokering reverse proxy for Azure Key Vault.
// Run `kvproxy -h` for its configuration.
package main

import (
	"os"

	"github.com/kvproxy/kvproxy/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
