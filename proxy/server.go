package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/metrics"
)

// ServerOptions configure the proxy listener's HTTP server.
type ServerOptions struct {
	// CheckHost refuses requests whose Host is not an IP literal, localhost
	// or one of Options.AllowedHosts (421 host-not-allowed): a browser page
	// on a name rebound to this address could otherwise add
	// "Metadata: true" without a preflight and read secrets. Set it on TCP
	// listeners; a unix socket needs none.
	CheckHost bool
	// ReadTimeout bounds reading one request, headers and body (default
	// 1m): a client that stalls its body gets 400 body-unreadable.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response (default UpstreamTimeout+30s).
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long (default 2m).
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once (default 4096); a
	// connection over it gets 503 overloaded and is closed.
	MaxConns int
}

// Server is the proxy listener's server. It is two fasthttp servers with
// one handler: connections are handed to the fast one while fewer than
// fastConns are open, and to the lean one beyond. The fast one keeps each
// connection's read and write buffers between requests (one read syscall
// a request); the lean one gives them back while a connection is idle
// (fasthttp's ReduceMemoryUsage: one more read syscall a request, measured
// at 0.55× the throughput here), so thousands of idle connections cost
// little: a sidecar's few connections are fast, a crowd stays bounded.
type Server struct {
	fast, lean *fasthttp.Server
	limit      *connLimit
	mu         sync.Mutex
	ln         net.Listener  // what Serve accepts from
	served     chan struct{} // closed when Serve hands over no more connections
	stopped    bool
}

// fastConns is how many connections the fast server takes.
const fastConns = 256

// Server returns the proxy listener's server. Serve it on a listener and
// stop it with ShutdownWithContext. A Proxy has one server.
func (p *Proxy) Server(o ServerOptions) *Server {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = p.o.UpstreamTimeout + 30*time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 4096
	}
	// No request holds room for its body longer than it can live.
	p.budget.allowAge(o.ReadTimeout + p.o.UpstreamTimeout + o.WriteTimeout)
	limit := newConnLimit(o.MaxConns, p.o.Metrics)
	server := func(lean bool) *fasthttp.Server {
		handler := func(ctx *fasthttp.RequestCtx) {
			p.serve(ctx, o.CheckHost)
			dropLargeBuffers(ctx) // the lean server gives its buffers back anyway
		}
		if lean {
			handler = func(ctx *fasthttp.RequestCtx) { p.serve(ctx, o.CheckHost) }
		}
		return &fasthttp.Server{
			Handler:      handler,
			ErrorHandler: p.serverError,
			HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
				return p.budget.headerReceived(h, o.ReadTimeout)
			},
			ExpectHandler: p.expectContinue,
			ConnState: func(c net.Conn, s fasthttp.ConnState) {
				if s == fasthttp.StateClosed || s == fasthttp.StateHijacked {
					limit.closed()
					p.budget.releaseConn(c)
				}
			},
			Concurrency:                  o.MaxConns + 1, // Serve holds the limit; fasthttp's own must not refuse first
			Name:                         "",
			NoDefaultServerHeader:        true,
			NoDefaultContentType:         true,
			ReadTimeout:                  o.ReadTimeout,
			WriteTimeout:                 o.WriteTimeout,
			IdleTimeout:                  o.IdleTimeout,
			MaxRequestBodySize:           int(p.o.MaxBodyBytes),
			ReadBufferSize:               16 << 10, // the longest request head accepted
			ReduceMemoryUsage:            lean,
			DisablePreParseMultipartForm: true,
			CloseOnShutdown:              true,
			SecureErrorLogMessage:        true,
			Logger:                       slogPrinter{p.o.Logger},
		}
	}
	return &Server{fast: server(false), lean: server(true), limit: limit}
}

// Serve serves connections from ln until ln is closed or the server shut
// down, at most MaxConns at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	stopped := s.stopped
	s.ln = ln
	served := make(chan struct{})
	s.served = served
	s.mu.Unlock()
	if stopped {
		close(served)
		return nil
	}
	fast, lean := newChanListener(ln.Addr()), newChanListener(ln.Addr())
	var wg sync.WaitGroup
	wg.Go(func() { s.fast.Serve(fast) }) //nolint:errcheck // a chanListener fails only when closed
	wg.Go(func() { s.lean.Serve(lean) }) //nolint:errcheck
	defer close(served)                  // after both servers stopped accepting: ShutdownWithContext waits for it
	defer wg.Wait()
	defer fast.Close()
	defer lean.Close()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors (EMFILE) or another passing failure:
			// wait for connections to close instead of giving up serving,
			// backing off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		open := s.limit.open.Load()
		if open >= s.limit.max {
			s.limit.m.CountOverload(metrics.LimitConnections)
			s.limit.refuse(c)
			continue
		}
		s.limit.opened()
		if !(open < fastConns && fast.push(c)) && !lean.push(c) { // shutting down
			s.limit.closed()
			c.Close()
		}
	}
}

// ServeConn serves one connection (tests).
func (s *Server) ServeConn(c net.Conn) error {
	s.limit.opened()
	return s.fast.ServeConn(c)
}

// expectContinue answers "Expect: 100-continue": a request whose body
// found no room gets its 503 overloaded now, instead of "100 Continue"
// inviting a body that will not be read; any other is bound to its
// connection (see bodyBudget) and invited.
func (p *Proxy) expectContinue(ctx *fasthttp.RequestCtx) int {
	h := &ctx.Request.Header
	if p.budget.refused(h) {
		p.budget.release(h)
		p.refuse(ctx, overloaded(metrics.LimitBufferedBytes))
		p.o.Metrics.ObserveRequest(methodLabel(h.Method()), fasthttp.StatusServiceUnavailable, 0)
		return fasthttp.StatusServiceUnavailable // fasthttp closes the connection
	}
	p.budget.bindConn(h, ctx.Conn())
	return fasthttp.StatusContinue
}

// ShutdownWithContext stops accepting, closes idle connections and waits
// for the others to finish their requests, until ctx ends.
func (s *Server) ShutdownWithContext(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	if s.ln != nil {
		s.ln.Close() // Serve returns
	}
	served := s.served
	s.mu.Unlock()
	// Every connection Serve accepted is with a server before they are
	// shut down: a server whose Serve had not started yet would otherwise
	// return from its shutdown at once and take a connection after.
	if served != nil {
		select {
		case <-served:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.lean.ShutdownWithContext(ctx) }()
	return errors.Join(s.fast.ShutdownWithContext(ctx), <-errc)
}

// Shutdown is ShutdownWithContext without a deadline.
func (s *Server) Shutdown() error { return s.ShutdownWithContext(context.Background()) }

// slogPrinter sends fasthttp's own messages to the logger at debug.
type slogPrinter struct{ l *slog.Logger }

func (s slogPrinter) Printf(format string, args ...any) {
	if s.l.Enabled(context.Background(), slog.LevelDebug) {
		s.l.Debug("http server", slog.String("detail", strings.TrimSpace(fmt.Sprintf(format, args...))))
	}
}

// serverError answers what fasthttp could not parse or read.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	var ref refusal
	refused := p.budget.release(&ctx.Request.Header)
	switch {
	case refused:
		ref = overloaded(metrics.LimitBufferedBytes)
		ctx.SetConnectionClose() // the body was not read
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ref = tooLarge(p.o.MaxBodyBytes)
	case errors.As(err, &ne) && ne.Timeout() && len(ctx.Method()) > 0:
		ref = refusal{status: fasthttp.StatusBadRequest, code: "BadRequest", diagnosis: diagnose.BodyUnreadable,
			message: "The request body could not be read.", detail: "the client stopped sending the body before the read deadline"}
	case errors.As(err, &ne) && ne.Timeout():
		ref = refusal{status: fasthttp.StatusRequestTimeout, code: "RequestTimeout", diagnosis: diagnose.MalformedRequest,
			message: "The request did not arrive in time.", detail: "the client did not send a whole request before the read deadline"}
	case errors.As(err, &small):
		ref = refusal{status: fasthttp.StatusRequestHeaderFieldsTooLarge, code: "HeadersTooLarge", diagnosis: diagnose.MalformedRequest,
			message: "The request headers are too large.", detail: "kvproxy reads at most 16 KiB of request line and headers"}
	case strings.Contains(err.Error(), "invalid request uri"): // "GET *", "GET http:evil"
		ref = refusal{status: fasthttp.StatusBadRequest, code: "InvalidRequestTarget", diagnosis: diagnose.InvalidRequestTarget,
			message: "The request target must be a path such as /secrets/name?api-version=7.5.",
			detail:  "kvproxy forwards only to its configured vault (" + p.vault + "); send the Key Vault path, not a URL"}
	default:
		ref = refusal{status: fasthttp.StatusBadRequest, code: "BadRequest", diagnosis: diagnose.MalformedRequest,
			message: "The request is not valid HTTP/1.1.", detail: "kvproxy could not parse the request (framing, chunked encoding or a forbidden trailer); nothing was forwarded"}
	}
	p.refuse(ctx, ref)
	p.o.Metrics.ObserveRequest(methodLabel(ctx.Method()), ref.status, 0)
}

// hostPolicy caches Host verdicts in a copy-on-write map read with one
// atomic load: no lock is taken on a request's path, so the cores serving
// requests do not contend for one.
type hostPolicy struct {
	verdict atomic.Pointer[map[string]bool]
	mu      sync.Mutex // serialises writers
}

const maxHostVerdicts = 1024

// hostAllowed reports whether a request's Host may be served.
func (p *Proxy) hostAllowed(h []byte) bool {
	if len(h) == 0 {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	if m := p.hosts.verdict.Load(); m != nil {
		if v, ok := (*m)[string(h)]; ok {
			return v
		}
	}
	s := string(h)
	host := normHost(s)
	v := host == "localhost" || p.allowed[host]
	if !v {
		_, err := netip.ParseAddr(host)
		v = err == nil
	}
	p.hosts.mu.Lock()
	defer p.hosts.mu.Unlock()
	old := p.hosts.verdict.Load()
	if old == nil || len(*old) < maxHostVerdicts {
		next := make(map[string]bool, 1+lenOf(old))
		if old != nil {
			maps.Copy(next, *old)
		}
		next[s] = v
		p.hosts.verdict.Store(&next)
	}
	return v
}

func lenOf(m *map[string]bool) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// normHost lower-cases a host, strips its port, the brackets of an IPv6
// literal and a trailing dot.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}

// methodLabel maps a method to a constant string without allocating.
func methodLabel(m []byte) string {
	switch string(m) {
	case fasthttp.MethodGet:
		return fasthttp.MethodGet
	case fasthttp.MethodHead:
		return fasthttp.MethodHead
	case fasthttp.MethodPut:
		return fasthttp.MethodPut
	case fasthttp.MethodPost:
		return fasthttp.MethodPost
	case fasthttp.MethodPatch:
		return fasthttp.MethodPatch
	case fasthttp.MethodDelete:
		return fasthttp.MethodDelete
	case fasthttp.MethodOptions:
		return fasthttp.MethodOptions
	}
	return "other"
}

// hasBothFramings reports a request head that carries Content-Length and
// Transfer-Encoding together: a request smuggling attempt.
func hasBothFramings(raw []byte) bool {
	var cl, te bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		}
	}
	return cl && te
}
