// Package app wires kvproxy's parts into the running binary: subcommands,
// listeners, the admin endpoints and graceful shutdown. It is the only
// place that reads the process environment.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kvproxy/kvproxy/internal/config"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1 // a runtime failure (a listener could not be opened, a check failed)
	ExitUsage  = 2 // invalid configuration or arguments
)

// Main runs kvproxy with args (without the program name) and environ
// (os.Environ form), writing to stdout and stderr, and returns the exit code.
func Main(args []string, environ []string, stdout, stderr io.Writer) int {
	env := envMap(environ)
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "-h", "-help", "--help", "help":
		printHelp(stdout)
		return ExitOK
	case "version", "-version", "--version", "-v":
		return runVersion(args[1:], stdout, stderr)
	case "dev":
		fs := devFlags()
		if code, ok := parseFlags(fs, args[1:], stdout, stderr); !ok {
			return code
		}
		ctx, stop := signalContext()
		defer stop()
		return exitCode(runDev(ctx, fs.Args(), env, stdout, stderr), stderr)
	case "check":
		ctx, stop := signalContext()
		defer stop()
		return runCheck(ctx, args[1:], env, stdout, stderr)
	case "", "run":
		if len(args) == 2 && (args[1] == "-h" || args[1] == "-help" || args[1] == "--help") {
			printHelp(stdout)
			return ExitOK
		}
		if len(args) > 1 {
			fmt.Fprintf(stderr, "kvproxy: unexpected arguments %q; kvproxy is configured through environment variables (kvproxy -h)\n", args[1:])
			return ExitUsage
		}
	default:
		fmt.Fprintf(stderr, "kvproxy: unknown command %q (commands: run, dev, check, version; kvproxy -h lists the configuration)\n", cmd)
		return ExitUsage
	}
	cfg, err := config.Load(env)
	if err != nil {
		return exitCode(err, stderr)
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	ml := setMemoryLimit(cfg, env)
	ctx, stop := signalContext()
	defer stop()
	return exitCode(Run(ctx, cfg, Deps{MemoryLimit: ml.String()}, logger), stderr)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// exitCode maps an error to an exit code, printing it.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, "kvproxy: invalid configuration:")
		for _, p := range ce.Problems {
			fmt.Fprintln(stderr, "  "+p)
		}
		return ExitUsage
	}
	fmt.Fprintln(stderr, "kvproxy:", err)
	return ExitFailed
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
