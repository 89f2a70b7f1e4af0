package proxy

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/metrics"
)

// What bounds kvproxy's memory: the connections served at once
// (ServerOptions.MaxConns, counted by [connLimit]) and the bytes of request
// bodies held at once (Options.MaxBufferedBytes, reserved by [bodyBudget]
// before fasthttp reads a body). Past the first connections an idle
// keep-alive connection holds no buffer (see [Server]), so its cost is a
// goroutine.

// bodyBudget reserves room for request bodies before they are read. It is
// consulted from fasthttp's HeaderReceived hook, which runs after a
// request's head and before its body is read; the reservation is released
// when the handler (or the error handler) is done with the request.
//
// Reservations are keyed by the request header's address, which is fixed
// for a connection's lifetime and seen by all the hooks. One path ends a
// request without either handler: writing "100 Continue" fails (the client
// went away while waiting for room). The Expect handler binds such a
// request's reservation to its connection, whose close releases it. As a
// last resort the next request on that header releases what it finds, and
// a sweep releases any reservation older than a request can live.
type bodyBudget struct {
	sem     *semaphore.Weighted
	maxBody int64
	wait    time.Duration
	// maxAge (nanoseconds) is how long a request can live on any server
	// of the proxy (raised by each Server): no reservation is held longer.
	maxAge atomic.Int64
	m      *metrics.Metrics

	mu        sync.Mutex
	held      map[*fasthttp.RequestHeader]reservation
	byConn    map[net.Conn]*fasthttp.RequestHeader
	lastSweep time.Time
	// entries is len(held), read without the lock: requests without a
	// body, most of them, then cost one atomic load.
	entries atomic.Int64
}

type reservation struct {
	n  int64 // bytes reserved; 0 with refused
	at time.Time
	// conn is the connection of a request that asked "Expect:
	// 100-continue": if writing "100 Continue" fails, fasthttp ends the
	// connection without calling either handler, and its close releases
	// the room (releaseConn).
	conn net.Conn
	// refused marks a request that could not get room: the error handler
	// answers it 503 overloaded.
	refused bool
}

func newBodyBudget(size, maxBody int64, wait, maxAge time.Duration, m *metrics.Metrics) *bodyBudget {
	b := &bodyBudget{sem: semaphore.NewWeighted(size), maxBody: maxBody, wait: wait, m: m,
		held: map[*fasthttp.RequestHeader]reservation{}, byConn: map[net.Conn]*fasthttp.RequestHeader{}}
	b.allowAge(maxAge)
	return b
}

// allowAge raises maxAge to d: a Proxy may serve on several listeners.
func (b *bodyBudget) allowAge(d time.Duration) {
	for {
		old := b.maxAge.Load()
		if int64(d) <= old || b.maxAge.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// reserveSize is the room a request's body needs: its Content-Length, or
// the body limit for a chunked body; 0 without a body or when the body is
// over the limit anyway (fasthttp answers 413 without reading it).
func (b *bodyBudget) reserveSize(h *fasthttp.RequestHeader) int64 {
	switch cl := int64(h.ContentLength()); {
	case cl == -1: // chunked
		return b.maxBody
	case cl > 0 && cl <= b.maxBody:
		return cl
	}
	return 0
}

// headerReceived reserves room for the body of the request whose head
// arrived, waiting up to b.wait. Without room it tells fasthttp to refuse
// the body as too large, which hands the request to the error handler
// without reading the body; that handler answers 503 overloaded.
func (b *bodyBudget) headerReceived(h *fasthttp.RequestHeader, readTimeout time.Duration) fasthttp.RequestConfig {
	b.release(h) // what a request on this header left behind
	n := b.reserveSize(h)
	if n == 0 {
		return fasthttp.RequestConfig{}
	}
	at := time.Now()
	b.sweep(at)
	if !b.sem.TryAcquire(n) {
		ctx, cancel := context.WithTimeout(context.Background(), b.wait)
		err := b.sem.Acquire(ctx, n)
		cancel()
		if err != nil {
			b.put(h, reservation{at: at, refused: true})
			b.m.CountOverload(metrics.LimitBufferedBytes)
			return fasthttp.RequestConfig{MaxRequestBodySize: 1}
		}
		at = time.Now() // held from the end of the wait
	}
	b.put(h, reservation{n: n, at: at})
	b.m.AddBufferedBytes(n)
	// The wait counted against the read deadline: restart it for the body.
	return fasthttp.RequestConfig{ReadTimeout: readTimeout}
}

func (b *bodyBudget) put(h *fasthttp.RequestHeader, r reservation) {
	b.mu.Lock()
	b.held[h] = r
	b.entries.Store(int64(len(b.held)))
	b.mu.Unlock()
}

// refused reports whether the request on h found no room for its body.
func (b *bodyBudget) refused(h *fasthttp.RequestHeader) bool {
	if b.entries.Load() == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held[h].refused
}

// release gives back what the request on h reserved; it reports whether
// the request was refused for want of room.
func (b *bodyBudget) release(h *fasthttp.RequestHeader) (refused bool) {
	if b.entries.Load() == 0 {
		return false
	}
	b.mu.Lock()
	r, ok := b.take(h)
	b.mu.Unlock()
	if ok && r.n > 0 {
		b.sem.Release(r.n)
		b.m.AddBufferedBytes(-r.n)
	}
	return r.refused
}

// take removes the reservation of h, under b.mu.
func (b *bodyBudget) take(h *fasthttp.RequestHeader) (reservation, bool) {
	r, ok := b.held[h]
	if ok {
		delete(b.held, h)
		if r.conn != nil {
			delete(b.byConn, r.conn)
		}
		b.entries.Store(int64(len(b.held)))
	}
	return r, ok
}

// bindConn ties the reservation of h to its connection c (see
// reservation.conn).
func (b *bodyBudget) bindConn(h *fasthttp.RequestHeader, c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r, ok := b.held[h]; ok {
		r.conn = c
		b.held[h] = r
		b.byConn[c] = h
	}
}

// releaseConn releases the reservation bound to the closed connection c.
func (b *bodyBudget) releaseConn(c net.Conn) {
	if b.entries.Load() == 0 {
		return
	}
	b.mu.Lock()
	h, ok := b.byConn[c]
	b.mu.Unlock()
	if ok {
		b.release(h)
	}
}

// sweep releases reservations older than any request can live, at most
// once per second.
func (b *bodyBudget) sweep(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastSweep) < time.Second {
		return
	}
	b.lastSweep = now
	for h, r := range b.held {
		if now.Sub(r.at) > time.Duration(b.maxAge.Load()) {
			b.take(h)
			if r.n > 0 {
				b.sem.Release(r.n)
				b.m.AddBufferedBytes(-r.n)
			}
		}
	}
}

// largeBody is the body size over which a connection does not keep the
// buffer for its next request. fasthttp keeps each connection's request and
// response body buffers at the largest size they reached, so without this
// 2,000 connections that each once carried a 1 MiB body would hold 2 GiB
// while idle. Key Vault bodies are mostly far smaller.
const largeBody = 16 << 10

// dropLargeBuffers lets go of the body buffers of a request that carried a
// large body or got a large answer: the request's now, the response's once
// it is written (it is sent from a buffer of its own, not the pooled one).
func dropLargeBuffers(ctx *fasthttp.RequestCtx) {
	if len(ctx.Request.Body()) > largeBody {
		ctx.Request.SwapBody(nil)
	}
	if len(ctx.Response.Body()) > largeBody {
		ctx.Response.SetBodyRaw(ctx.Response.SwapBody(nil))
	}
}

// overloaded is the refusal of work over a limit.
func overloaded(limit string) refusal {
	detail := "KVPROXY_MAX_BUFFERED_BYTES of request bodies are already held in memory and no room came free in time; retry, or raise the limit (and the memory limit with it)"
	if limit == metrics.LimitConnections {
		detail = "KVPROXY_MAX_CONNS connections are already open; close idle connections, use fewer, or raise the limit"
	}
	return refusal{status: fasthttp.StatusServiceUnavailable, code: "Overloaded", diagnosis: diagnose.Overloaded,
		message: "kvproxy is at its limit and cannot take this request now.", detail: detail}
}

// connLimit refuses connections over a limit at accept time ([Server.Serve]):
// the connection gets a 503 overloaded answer and is closed, so the limit
// holds however many clients connect. A connection is counted open by the
// accept loop, before it is handed to a server, and closed by fasthttp's
// ConnState hook.
type connLimit struct {
	max      int64
	open     atomic.Int64
	refusing atomic.Int64 // answers being written
	m        *metrics.Metrics
	answer   []byte // the whole 503 response
}

func newConnLimit(max int, m *metrics.Metrics) *connLimit {
	r := overloaded(metrics.LimitConnections)
	body := r.body()
	head := "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\n" +
		HeaderDiagnosis + ": " + r.diagnosis + "\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	return &connLimit{max: int64(max), m: m, answer: append([]byte(head), body...)}
}

// refuse answers c 503 overloaded and closes it, in the background: at
// most maxRefusing at once, so a flood of connections over the limit
// cannot pile up goroutines; beyond that a connection is closed unanswered.
func (l *connLimit) refuse(c net.Conn) {
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer l.refusing.Add(-1)
		l.answerAndClose(c)
	}()
}

// maxRefusing bounds the connections being answered 503 at once.
const maxRefusing = 64

// answerAndClose writes the 503 before the request is read; a client that
// has sent its request by then still reads it (the close waits until the
// answer is out and the client's bytes are drained, briefly).
func (l *connLimit) answerAndClose(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(l.answer); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// Drain what the client sent so the close does not reset the
	// connection before it has read the answer.
	var buf [4096]byte
	for range 16 {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// opened counts a connection handed to a server; closed, one that ended.
// The accept loop counts before handing a connection over, so a burst
// cannot slip past the limit between two accepts.
func (l *connLimit) opened() {
	l.open.Add(1)
	l.m.AddConnections(1)
}

func (l *connLimit) closed() {
	l.open.Add(-1)
	l.m.AddConnections(-1)
}

// chanListener is a listener fed connections by [Server.Serve].
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server accepting from l; false once l is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
