package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/internal/config"
)

// listen opens a TCP listener, or a unix socket for unix:///path. The
// socket has its final mode (0660) from the first instant, and a live socket
// is never replaced: when something answers at the path (another kvproxy,
// another service), listen fails naming it; only a stale socket file, one
// nothing listens on, is removed.
func listen(addr string) (net.Listener, error) {
	path, ok := config.UnixSocketPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: something is listening on this socket (another kvproxy?); refusing to take it over", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	return listenUnix(path)
}

// adminURL is how the dev banner shows the admin listener.
func adminURL(addr string) string {
	if strings.HasPrefix(addr, "unix://") {
		return addr
	}
	return "http://" + addr
}
