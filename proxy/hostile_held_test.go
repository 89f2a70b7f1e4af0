package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Hostile-client checks that held (they pass): kept as regression tests.

func TestHostileShutdownWaitsForTheLeanServersRequest(t *testing.T) {
	// Past the first 256 connections the lean server serves: a request in
	// flight there when Shutdown is called still gets its answer, and
	// Shutdown waits for it.
	e := setup(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := e.proxy.Server(ServerOptions{CheckHost: true, MaxConns: 1000})
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }() //nolint:errcheck
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range fastConns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitGauge(t, e.metrics.Connections, fastConns, "the fast server's connections")
	e.faults.SetLatency(time.Second)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, putHead+putBody()); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, e.metrics.BufferedBytes, 600, "the request to be in flight")
	for _, c := range idle { // idle connections would hold Shutdown for 5s
		c.Close()
	}
	idle = nil
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- srv.Shutdown() }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the in-flight request on the lean server: %v %v", resp, err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hangs")
	}
	<-done
	t.Logf("shutdown took %v", time.Since(start))
}
