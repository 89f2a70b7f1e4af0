package app

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kvproxy/kvproxy/internal/config"
)

// printHelp prints usage and every variable, generated from config.Config.
func printHelp(w io.Writer) {
	fmt.Fprint(w, `kvproxy — a token-brokering reverse proxy for Azure Key Vault.

Usage:
  kvproxy              run the proxy (configured by environment variables)
  kvproxy dev          run against a built-in local vault and identity endpoint
  kvproxy check [-o json]
                       check the identity, the vault and one read; exit 0 if all is well
  kvproxy version      print version, commit and Go version
  kvproxy -h           print this help

Environment variables:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	for _, v := range config.Variables() {
		if v.SDK {
			continue
		}
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.Name, def, v.Description)
	}
	tw.Flush()
	fmt.Fprint(w, "\nRead by the Azure SDK credential:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range config.Variables() {
		if v.SDK {
			fmt.Fprintf(tw, "  %s\t%s\n", v.Name, v.Description)
		}
	}
	tw.Flush()
}
