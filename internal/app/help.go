package app

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kvproxy/kvproxy/internal/config"
)

// printHelp prints every subcommand with its flags, then every variable,
// generated from config.Config.
func printHelp(w io.Writer) {
	fmt.Fprint(w, "kvproxy — a token-brokering reverse proxy for Azure Key Vault.\n\nUsage:\n")
	for _, c := range subcommands {
		printSubcommand(w, c)
	}
	fmt.Fprint(w, "\nEnvironment variables:\n")
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
