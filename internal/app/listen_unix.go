//go:build unix

package app

import (
	"net"
	"os"
	"sync"
	"syscall"
)

var umaskMu sync.Mutex

// listenUnix creates the socket under a umask that gives it mode 0660 at
// once: a chmod after bind would leave a window in which any local user
// could connect (and keep the connection).
func listenUnix(path string) (net.Listener, error) {
	umaskMu.Lock()
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil { // the mode stays 0660 if a umask was stricter
		ln.Close()
		return nil, err
	}
	return ln, nil
}
