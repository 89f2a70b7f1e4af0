//go:build !unix

package app

import "net"

// listenUnix creates the socket; file modes do not apply here.
func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }
