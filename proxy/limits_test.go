package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/azfake/azfaketest"
	"github.com/kvproxy/kvproxy/metrics"
)

// putHead is the head of a 600-byte write; the body follows separately.
const putHead = "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Type: application/json\r\nContent-Length: 600\r\n\r\n"

func putBody() string { return `{"value":"` + strings.Repeat("v", 600-12) + `"}` }

// chunkedPut is a chunked write, which reserves all of MaxBodyBytes.
const chunkedPut = "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n" +
	"d\r\n{\"value\":\"v\"}\r\n0\r\n\r\n"

// holdRoom slows the vault by latency, sends raw on a connection of its
// own and returns that connection once reserved bytes of room are held.
func holdRoom(t *testing.T, e *env, latency time.Duration, raw string, reserved float64) net.Conn {
	t.Helper()
	e.faults.SetLatency(latency)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, e.metrics.BufferedBytes, reserved, "the first body's room")
	return c
}

func TestBodyOverTheBudgetIsRefusedUnread(t *testing.T) {
	// Room for one 600-byte body of MaxBodyBytes 1024: a second write
	// waits BufferWait, then gets 503 overloaded without its body read.
	e := setup(t, func(o *Options) { o.MaxBufferedBytes = 1024; o.BufferWait = 50 * time.Millisecond })
	first := holdRoom(t, e, time.Second, putHead+putBody(), 600) // the first write holds its room

	// The second body is held back: the refusal must not wait for it.
	resp, body, _, br := rawExchange(t, e.url, putHead)
	if resp.StatusCode != 503 || resp.Header.Get(HeaderDiagnosis) != diagnose.Overloaded || !resp.Close {
		t.Fatalf("status %d diagnosis %q close %v: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), resp.Close, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After on 503 overloaded")
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Error("the connection stayed open after a refusal that left the body unread")
	}
	if got := testutil.ToFloat64(e.metrics.Overload.WithLabelValues(metrics.LimitBufferedBytes)); got != 1 {
		t.Errorf("kvproxy_overload_refusals_total{limit=buffered_bytes} = %v, want 1", got)
	}

	// The first write completes, and its room comes back.
	r, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("the first write: %v %v", err, r)
	}
	r.Body.Close()
	waitGauge(t, e.metrics.BufferedBytes, 0, "the room to come back")
	if n := len(e.vault.Requests()); n != 1 {
		t.Errorf("the vault saw %d requests, want the first write only", n)
	}
	e.faults.SetLatency(0)
	resp, body, _, _ = rawExchange(t, e.url, putHead+putBody())
	if resp.StatusCode != 200 {
		t.Fatalf("a write after the room came back: %d %s", resp.StatusCode, body)
	}
}

func TestChunkedBodyReservesTheBodyLimit(t *testing.T) {
	// A chunked body's size is unknown until read, so it reserves
	// MaxBodyBytes: with room for one, a second chunked write is refused.
	e := setup(t, func(o *Options) { o.MaxBufferedBytes = 1024; o.BufferWait = 50 * time.Millisecond })
	holdRoom(t, e, time.Second, chunkedPut, 1024)
	second := "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
	resp, body, _, _ := rawExchange(t, e.url, second)
	if resp.StatusCode != 503 || resp.Header.Get(HeaderDiagnosis) != diagnose.Overloaded {
		t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
	}
}

func TestLeftReservationIsReleased(t *testing.T) {
	b := newBodyBudget(1000, 1000, 10*time.Millisecond, time.Minute, nil)
	var h1, h2 fasthttp.RequestHeader
	h1.SetContentLength(800)
	h2.SetContentLength(800)
	if c := b.headerReceived(&h1, time.Second); c.MaxRequestBodySize != 0 {
		t.Fatal("the first body found no room")
	}
	if c := b.headerReceived(&h2, time.Second); c.MaxRequestBodySize != 1 || !b.refused(&h2) {
		t.Fatal("a second body found room that is taken")
	}
	b.release(&h2)
	// The first request's connection went away without a handler call:
	// the next request on its header gives the room back first.
	h1.SetContentLength(900)
	if c := b.headerReceived(&h1, time.Second); c.MaxRequestBodySize != 0 {
		t.Fatal("a request on the same header did not get the room its predecessor left")
	}
	// And a reservation older than any request can live is swept.
	b.maxAge.Store(0)
	b.lastSweep = time.Time{}
	if c := b.headerReceived(&h2, time.Second); c.MaxRequestBodySize != 0 {
		t.Fatal("a reservation past its age was not swept")
	}
	b.release(&h2)
	if b.entries.Load() != 0 || !b.sem.TryAcquire(1000) {
		t.Fatal("room is missing after every reservation was released")
	}
}

func TestConnectionsOverTheLimitAreRefused(t *testing.T) {
	e := setup(t, nil)
	url := serveProxy(t, e.proxy, ServerOptions{CheckHost: true, MaxConns: 3})
	host := strings.TrimPrefix(url, "http://")
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	waitGauge(t, e.metrics.Connections, 3, "three connections")
	resp, body, _, _ := rawExchange(t, url, "GET /secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n")
	if resp.StatusCode != 503 || resp.Header.Get(HeaderDiagnosis) != diagnose.Overloaded || !strings.Contains(body, "KVPROXY_MAX_CONNS") {
		t.Fatalf("status %d diagnosis %q: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), body)
	}
	if got := testutil.ToFloat64(e.metrics.Overload.WithLabelValues(metrics.LimitConnections)); got != 1 {
		t.Errorf("kvproxy_overload_refusals_total{limit=connections} = %v, want 1", got)
	}
	if n := len(e.vault.Requests()); n != 0 {
		t.Errorf("the vault saw %d requests", n)
	}
	open[0].Close()
	open = open[1:]
	waitGauge(t, e.metrics.Connections, 2, "a connection to close")
	resp, body, _, _ = rawExchange(t, url, "GET /secrets/db-password HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("a connection under the limit again: %d %s", resp.StatusCode, body)
	}
}

// waitGauge waits until g reads want, failing after 5s with the last value.
func waitGauge(t *testing.T, g prometheus.Gauge, want float64, what string) {
	t.Helper()
	azfaketest.Eventually(t, 5*time.Second, what, func() (bool, string) {
		v := testutil.ToFloat64(g)
		return v == want, fmt.Sprint(v)
	})
}
