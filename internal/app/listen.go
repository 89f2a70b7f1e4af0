package app

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/kvproxy/kvproxy/internal/config"
)

// adminPlaceholder stands in for a unix-socket KVPROXY_ADMIN_ADDR while
// config.Load validates the rest: config accepts only host:port there.
const adminPlaceholder = "127.0.0.1:0"

// loadConfig is config.Load, except that KVPROXY_ADMIN_ADDR may also be a
// unix socket (unix:///run/kvproxy/admin.sock), as KVPROXY_LISTEN_ADDR may:
// on a VM a socket lets file permissions decide who reads /metrics. listen
// opens both kinds. Problems are reported together, as config.Load does.
func loadConfig(env map[string]string) (*config.Config, error) {
	raw := env["KVPROXY_ADMIN_ADDR"]
	path, isUnix := config.UnixSocketPath(raw)
	if !isUnix {
		return config.Load(env)
	}
	env = maps.Clone(env)
	env["KVPROXY_ADMIN_ADDR"] = adminPlaceholder
	cfg, err := config.Load(env)
	var problems []string
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		problems = append(problems, ce.Problems...)
	case err != nil:
		return nil, err
	}
	if !strings.HasPrefix(path, "/") {
		problems = append(problems, fmt.Sprintf("KVPROXY_ADMIN_ADDR: %q: the socket path must be absolute (unix:///path/admin.sock)", raw))
	} else if lp, ok := config.UnixSocketPath(env["KVPROXY_LISTEN_ADDR"]); ok && lp == path {
		problems = append(problems, fmt.Sprintf("KVPROXY_ADMIN_ADDR: %q is also KVPROXY_LISTEN_ADDR; give the admin listener its own socket", raw))
	}
	if len(problems) > 0 {
		return nil, &config.Error{Problems: problems}
	}
	cfg.AdminAddr = raw
	return cfg, nil
}

// adminURL is how the dev banner shows the admin listener.
func adminURL(addr string) string {
	if strings.HasPrefix(addr, "unix://") {
		return addr
	}
	return "http://" + addr
}
