package app

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestUnixSocketFinalModeAndNoTakeover(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kvproxy.sock")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ln, err := listen("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o660 {
		t.Errorf("socket mode %o, want 660", m)
	}
	// A live socket is not replaced.
	if _, err := listen("unix://" + path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a second listener on a live socket: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal("the first listener lost its socket:", err)
	}
	c.Close()
	ln.Close()
	// A stale one is.
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o600) //nolint:errcheck
	l2, err := net.Listen("unix", filepath.Join(dir, "stale.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	ln, err = listen("unix://" + filepath.Join(dir, "stale.sock"))
	if err != nil {
		t.Fatalf("a stale socket was not replaced: %v", err)
	}
	ln.Close()
	// Something that is not a socket is never removed.
	if _, err := listen("unix://" + filepath.Join(dir, "x")); err == nil {
		t.Fatal("a regular file was replaced")
	}
}
