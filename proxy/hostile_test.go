package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/secretcache"
)

// Hostile-client tests: each reproduces a bug a hostile pass over the
// limits found, fixed where its comment says.

// fillBudget takes all of a 1024-byte budget with a chunked PUT the vault
// holds for a second.
func fillBudget(t *testing.T, e *env) { holdRoom(t, e, time.Second, chunkedPut, 1024) }

// Fixed by Proxy.expectContinue (proxy/server.go): a refused body gets its
// 503 instead of "100 Continue".
func TestHostileExpectContinueRefusedWithoutInvitingTheBody(t *testing.T) {
	// A client that asks "Expect: 100-continue" while the budget is full
	// must get the 503 overloaded as its answer, not "100 Continue" (which
	// invites a body kvproxy will not read and then closes on).
	e := setup(t, func(o *Options) { o.MaxBufferedBytes = 1024; o.BufferWait = 50 * time.Millisecond })
	fillBudget(t, e)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 600\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 503") {
		t.Errorf("first answer line %q: the refused body was invited with 100 Continue", strings.TrimSpace(line))
		// What a client does next: sends the body it was invited to.
		br.ReadString('\n')
		time.Sleep(100 * time.Millisecond) // let the 503 and the close arrive first
		_, werr := io.WriteString(c, putBody())
		resp, rerr := http.ReadResponse(br, nil)
		t.Logf("body write: %v; final answer: %v %v", werr, resp != nil && resp.StatusCode == 503, rerr)
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderDiagnosis) != diagnose.Overloaded {
		t.Fatalf("%v %v", resp, err)
	}
}

// Fixed in Server.Serve: the accept loop counts a connection before
// handing it over, not fasthttp's StateNew after.
func TestHostileConnectionLimitHoldsUnderABurst(t *testing.T) {
	// MaxConns is "at most MaxConns at once": connections that arrive
	// together must not all be let in before the first is counted.
	e := setup(t, nil)
	const maxConns = 2
	base := serveProxy(t, e.proxy, ServerOptions{CheckHost: true, MaxConns: maxConns})
	host := strings.TrimPrefix(base, "http://")
	worst := 0.0
	for round := 0; round < 20 && worst <= maxConns; round++ {
		conns := make(chan net.Conn, 8)
		for range 8 {
			go func() {
				c, err := net.DialTimeout("tcp", host, 5*time.Second)
				if err != nil {
					conns <- nil
					return
				}
				conns <- c
			}()
		}
		var open []net.Conn
		for range 8 {
			if c := <-conns; c != nil {
				open = append(open, c)
			}
		}
		// Let the refused ones be answered and closed, and the others counted.
		time.Sleep(100 * time.Millisecond)
		worst = max(worst, testutil.ToFloat64(e.metrics.Connections))
		for _, c := range open {
			c.Close()
		}
		waitGauge(t, e.metrics.Connections, 0, "the connections to close")
	}
	if worst > maxConns {
		t.Fatalf("%v connections were served at once with MaxConns %d", worst, maxConns)
	}
}

// Fixed by binding an Expect request's reservation to its connection
// (bodyBudget.bindConn), released when the connection closes.
func TestHostileExpectContinueClientGoneDuringTheWaitReleasesItsRoom(t *testing.T) {
	// A client asks "Expect: 100-continue" while the budget is full and
	// resets the connection while waiting. Room comes free, the reservation
	// is made, and fasthttp's write of "100 Continue" fails: fasthttp then
	// ends the connection without calling the handler or the error handler,
	// so nothing releases the reservation until another connection happens
	// to get the same pooled context, or the sweep (ReadTimeout +
	// UpstreamTimeout + WriteTimeout later, minutes by default).
	e := setup(t, func(o *Options) { o.MaxBufferedBytes = 1024; o.BufferWait = 3 * time.Second })
	first := holdRoom(t, e, 500*time.Millisecond, chunkedPut, 1024)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	head := "PUT /secrets/x HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 600\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the head is read; kvproxy waits for room
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset: kvproxy's write of 100 Continue will fail

	r, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("the first write: %v %v", err, r)
	}
	r.Body.Close()
	first.Close()
	// The second request got the room once the first gave it back (600 of
	// 1024 held), then its connection ended: the room must come back.
	deadline := time.Now().Add(3 * time.Second)
	for testutil.ToFloat64(e.metrics.BufferedBytes) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(e.metrics.BufferedBytes); got != 0 {
		t.Errorf("%v bytes of room are still reserved after every request ended (entries %d)", got, e.proxy.budget.entries.Load())
	}
	// What it costs: a client on a keep-alive connection (its own pooled
	// context, which never releases the left reservation) cannot write.
	e.faults.SetLatency(0)
	resp, body, _, _ := rawExchange(t, e.url, putHead+putBody())
	if resp.StatusCode != 200 {
		t.Errorf("a 600-byte write with nothing else in flight: %d %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis))
		_ = body
	}
}

// Fixed in diagnose.unavailable with Input.FirstStatus, and, through the
// secret cache's fetch, with secretcache.Attempts (the count was lost there).
func TestHostileUnavailableDiagnosisSaysAgainOnlyForTheSameAnswer(t *testing.T) {
	// The vault answers 503, kvproxy sends the GET once more, the vault
	// answers 500. The detail must not say the vault answered 500 "again":
	// it answered 503 first. With the cache on or off.
	for _, cache := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", cache), func(t *testing.T) {
			var n atomic.Int32
			u, pool := hostileVault(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				if n.Add(1) == 1 {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(503)
					io.WriteString(w, `{"error":{"code":"ServiceUnavailable","message":"busy"}}`) //nolint:errcheck
					return
				}
				w.WriteHeader(500)
				io.WriteString(w, `{"error":{"code":"InternalServerError","message":"oops"}}`) //nolint:errcheck
			})
			o := Options{Vault: u, RootCAs: pool, Tokens: &staticTokens{tok: goodToken()}, UpstreamTimeout: 5 * time.Second,
				RetryMax: 2, RetryMaxWait: time.Second, Metrics: metrics.New(prometheus.NewRegistry())}
			if cache {
				o.Cache = secretcache.New(secretcache.Options{TTL: time.Hour})
			}
			p, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			base := serveProxy(t, p, ServerOptions{CheckHost: true})
			resp, err := http.Get(base + "/secrets/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 500 || resp.Header.Get(HeaderDiagnosis) != diagnose.VaultUnavailable || n.Load() != 2 {
				t.Fatalf("status %d diagnosis %q after %d requests: %s", resp.StatusCode, resp.Header.Get(HeaderDiagnosis), n.Load(), body)
			}
			if got, want := resp.Header.Get(HeaderCache), map[bool]string{true: "MISS"}[cache]; got != want {
				t.Errorf("X-Cache %q, want %q", got, want)
			}
			var b struct {
				Kvproxy struct{ Detail string } `json:"kvproxy"`
			}
			if err := json.Unmarshal(body, &b); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(b.Kvproxy.Detail, "again") {
				t.Errorf("the detail says the 500 came again, after a 503: %s", b.Kvproxy.Detail)
			}
			if !strings.Contains(b.Kvproxy.Detail, "(its first answer was 503) after kvproxy sent the request once more") {
				t.Errorf("the detail does not tell of the retry and the first answer: %s", b.Kvproxy.Detail)
			}
		})
	}
}
