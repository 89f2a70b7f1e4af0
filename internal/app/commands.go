package app

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/internal/version"
)

// subcommand is one entry of `kvproxy -h`. flags, when set, returns the
// subcommand's flag set, so help lists exactly the flags it parses.
type subcommand struct {
	usage   string
	summary string
	flags   func() *flag.FlagSet
}

var subcommands = []subcommand{
	{usage: "kvproxy [run]", summary: "run the proxy, configured by the environment variables below"},
	{usage: "kvproxy dev", summary: "run the proxy against a built-in local vault and identity endpoint (nothing talks to Azure);\n" +
		"the variables below apply, except KVPROXY_VAULT_URL, KVPROXY_TOKEN_SCOPE and KVPROXY_CREDENTIAL,\n" +
		"which dev sets; its log format defaults to text", flags: func() *flag.FlagSet { return devFlags() }},
	{usage: "kvproxy check [flags]", summary: "check the identity, the vault and one read with the same environment; exit 0 if all is well",
		flags: func() *flag.FlagSet { fs, _, _ := checkFlags(); return fs }},
	{usage: "kvproxy version [flags]", summary: "print version, commit, Go version and build date (also: kvproxy -v, --version)",
		flags: func() *flag.FlagSet { fs, _ := versionFlags(); return fs }},
	{usage: "kvproxy help", summary: "print this help (also: -h, --help); kvproxy <command> -h prints one command's help"},
}

func devFlags() *flag.FlagSet { return flag.NewFlagSet("kvproxy dev", flag.ContinueOnError) }

func checkFlags() (fs *flag.FlagSet, output *string, timeout *time.Duration) {
	fs = flag.NewFlagSet("kvproxy check", flag.ContinueOnError)
	output = fs.String("o", "text", "output `format`: text or json")
	timeout = fs.Duration("timeout", 60*time.Second, "deadline for the whole check")
	return fs, output, timeout
}

func versionFlags() (fs *flag.FlagSet, output *string) {
	fs = flag.NewFlagSet("kvproxy version", flag.ContinueOnError)
	output = fs.String("o", "text", "output `format`: text or json")
	return fs, output
}

// parseFlags parses a subcommand's flags. -h prints its help on stdout
// (exit 0); a bad flag prints the problem and the help on stderr (exit 2).
// ok is false when the caller should return code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printSubcommandHelp(stdout, fs)
		return ExitOK, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		printSubcommandHelp(stderr, fs)
		return ExitUsage, false
	}
	return 0, true
}

// printSubcommandHelp prints the entry of `kvproxy -h` for fs's subcommand.
func printSubcommandHelp(w io.Writer, fs *flag.FlagSet) {
	for _, c := range subcommands {
		if c.flags != nil && c.flags().Name() == fs.Name() {
			fmt.Fprintln(w, "Usage:")
			printSubcommand(w, c)
			if fs.Name() == "kvproxy dev" || fs.Name() == "kvproxy check" {
				fmt.Fprintln(w, "\nkvproxy -h lists the environment variables.")
			}
			return
		}
	}
}

func printSubcommand(w io.Writer, c subcommand) {
	lines := strings.Split(c.summary, "\n")
	if len(c.usage) < 24 {
		fmt.Fprintf(w, "  %-24s %s\n", c.usage, lines[0])
	} else {
		fmt.Fprintf(w, "  %s\n  %-24s %s\n", c.usage, "", lines[0])
	}
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "  %-24s %s\n", "", l)
	}
	if c.flags == nil {
		return
	}
	c.flags().VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "-" + f.Name
		if name != "" {
			left += " " + name
		}
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "      %-20s %s%s\n", left, usage, def)
	})
}

// runVersion prints the build information, as text or JSON.
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs, output := versionFlags()
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvproxy version: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	}
	v := version.Get()
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v) //nolint:errcheck
	case "text":
		built := ""
		if v.BuildDate != "" {
			built = ", built " + v.BuildDate
		}
		fmt.Fprintf(stdout, "kvproxy %s (commit %s, %s%s)\n", v.Version, v.Commit, v.GoVersion, built)
	default:
		fmt.Fprintf(stderr, "kvproxy version: -o %q: want text or json\n", *output)
		return ExitUsage
	}
	return ExitOK
}
