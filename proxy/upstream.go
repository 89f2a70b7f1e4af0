package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"

	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// Retry reasons, the values of kvproxy_upstream_retries_total{reason}.
const (
	retryUnauthorized = metrics.RetryUnauthorized
	retryThrottled    = metrics.RetryThrottled
	retryUnavailable  = metrics.RetryUnavailable
)

// newHostClient is the pool of connections to the vault: TLS 1.2 or later,
// keep-alive connections reused across requests, timeouts on every phase,
// HTTPS_PROXY honoured (the token still travels inside the TLS tunnel to the
// vault). A request that failed on a reused connection is retried by the
// client only for GET and HEAD: a PUT may have reached the vault.
func newHostClient(o Options) *fasthttp.HostClient {
	addr := o.Vault.Host
	if o.Vault.Port() == "" {
		addr += ":443"
	}
	maxConns := o.MaxConnsPerHost
	if maxConns <= 0 {
		maxConns = 512
	}
	dialer := &fasthttpproxy.Dialer{Timeout: 10 * time.Second, ConnectTimeout: 10 * time.Second}
	dial, err := dialer.GetDialFunc(true)
	if err != nil {
		dial = nil // a malformed HTTPS_PROXY: dial directly, fasthttp's default
	}
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		dial = func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) }
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs, ServerName: o.Vault.Hostname(),
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	return &fasthttp.HostClient{
		Addr:                     addr,
		IsTLS:                    true,
		TLSConfig:                cfg,
		DialTimeout:              dialTLS(dial, cfg, o.UpstreamTimeout),
		MaxConns:                 maxConns,
		MaxIdleConnDuration:      90 * time.Second,
		MaxConnWaitTimeout:       o.UpstreamTimeout,
		MaxResponseBodySize:      maxResponseBody,
		ReadBufferSize:           16 << 10,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		RetryIfErr: func(req *fasthttp.Request, attempts int, _ error) (bool, bool) {
			return false, attempts < 2 && (req.Header.IsGet() || req.Header.IsHead())
		},
	}
}

// dialTLS connects through dial (HTTPS_PROXY's tunnel when set) and
// completes the TLS handshake, both within timeout: the request's
// remaining time, or fallback when fasthttp passes none (a connection
// dialled for a queue of waiting requests). Without it a vault that takes
// the TCP connection but never finishes the handshake (a black hole) would
// hold the request past its deadline: fasthttp would run the handshake
// inside the first write, where no read deadline applies.
func dialTLS(dial func(string) (net.Conn, error), cfg *tls.Config, fallback time.Duration) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if timeout <= 0 {
			timeout = fallback
		}
		deadline := time.Now().Add(timeout)
		type dialed struct {
			c   net.Conn
			err error
		}
		ch := make(chan dialed, 1)
		go func() { // the proxy dialer has deadlines of its own, not the request's
			c, err := dial(addr)
			ch <- dialed{c, err}
		}()
		t := time.NewTimer(timeout)
		defer t.Stop()
		var raw net.Conn
		select {
		case d := <-ch:
			if d.err != nil {
				return nil, dialError{d.err}
			}
			raw = d.c
		case <-t.C:
			go func() {
				if d := <-ch; d.c != nil {
					d.c.Close()
				}
			}()
			return nil, fasthttp.ErrDialTimeout
		}
		tc := tls.Client(raw, cfg)
		if err := raw.SetDeadline(deadline); err != nil {
			raw.Close()
			return nil, err
		}
		if err := tc.Handshake(); err != nil {
			raw.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fasthttp.ErrTLSHandshakeTimeout
			}
			return nil, dialError{err}
		}
		if err := raw.SetDeadline(time.Time{}); err != nil {
			tc.Close()
			return nil, err
		}
		return tc, nil
	}
}

// dialError is a failure to connect to the vault or to complete the TLS
// handshake: nothing was sent. It hides the cause from errors.As so that a
// reset during the handshake is not taken for one while reading an answer
// (brokeAfterSending), but keeps its text and whether it timed out.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }

// Timeout reports a connect that timed out (a 504, as other timeouts).
func (e dialError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}

// Temporary is part of net.Error.
func (e dialError) Temporary() bool { return false }

// forward sends the request to the vault and answers the client: through
// the secret cache for a cacheable read when the cache is on, else
// straight, with the vault's answer read into the client's response.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, st *requestState) {
	if p.o.Cache != nil {
		if name, ok := cacheable(ctx); ok {
			p.forwardCached(ctx, st, name)
			return
		}
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	p.buildRequest(ctx, req)
	if err := p.exchange(st.ctx, st.ctx.deadline, st, req, &ctx.Response); err != nil {
		ctx.Response.Reset()
		p.fail(ctx, st, err)
		return
	}
	if p.o.Cache != nil {
		p.invalidate(ctx)
	}
	p.respond(ctx, st)
}

// exchange sends req to the vault, injecting the token and retrying what
// is safe to retry, until deadline, and reads the final answer into resp;
// st records the token sent and the 401's challenge. An error means no
// answer (no token, the vault unreachable or too slow).
func (p *Proxy) exchange(tctx context.Context, deadline time.Time, st *requestState, req *fasthttp.Request, resp *fasthttp.Response) error {
	tok, err := p.o.Tokens.Token(tctx)
	if err != nil {
		return tokenFailure{err}
	}
	renewed, retries := false, 0 // a 401 renewal does not use up KVPROXY_RETRY_MAX
	paused := false              // the one resend of a transient 401 (AKV10046) was made
	for {
		resp.Reset()
		req.Header.SetBytesV("Authorization", p.bearer(tok.Token))
		st.token = tok.Token
		start := time.Now()
		err := p.client.DoDeadline(req, resp, deadline)
		p.o.Metrics.ObserveUpstream(time.Since(start).Seconds())
		if err != nil {
			return err
		}
		status := resp.StatusCode()
		if status == fasthttp.StatusUnauthorized {
			st.challenge = parseChallenge(resp)
		}
		switch {
		case status == fasthttp.StatusUnauthorized && !paused && (req.Header.IsGet() || req.Header.IsHead()) && transient401(resp.Body()):
			// The vault could not resolve the token's signing key: real
			// reports show the same token accepted moments later. Send the
			// request once more after a short pause, with a renewed token
			// when the credential has another (this is then the one 401
			// renewal, counted as such), else with the same one: that
			// resend is not counted, as no retry reason of
			// kvproxy_upstream_retries_total fits it.
			paused = true
			if time.Now().Add(transientPause).After(deadline) {
				return nil
			}
			p.o.Logger.Debug("the vault could not resolve the token's signing key (AKV10046); sending the request once more")
			select {
			case <-tctx.Done():
				return tctx.Err()
			case <-time.After(transientPause):
			}
			if !renewed {
				renewed = true
				if next, rerr := p.o.Tokens.Renew(tctx, tok.Token, st.challenge); rerr == nil {
					p.countRetry(retryUnauthorized)
					tok = next
				}
			}
			continue
		case status == fasthttp.StatusUnauthorized && !renewed:
			// The vault rejected the token: it was revoked, or a claims
			// challenge (CAE) asks for a new one. Get another and try once.
			renewed = true
			next, rerr := p.o.Tokens.Renew(tctx, tok.Token, st.challenge)
			if rerr != nil {
				return nil // diagnose the vault's 401 as it is
			}
			p.countRetry(retryUnauthorized)
			tok = next
			continue
		case retries < p.o.RetryMax && retryable(req.Header.Method(), status):
			wait := p.retryWait(string(resp.Header.Peek("Retry-After")), retries)
			retries++
			if time.Now().Add(wait).After(deadline) {
				return nil // no time left to wait: the client gets the 429/503
			}
			reason := retryThrottled
			if status == fasthttp.StatusServiceUnavailable {
				reason = retryUnavailable
			}
			p.countRetry(reason)
			if st.retries == 0 {
				st.firstStatus = status
			}
			st.retries = retries
			select {
			case <-tctx.Done():
				return tctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		return nil
	}
}

// transientPause is the wait before resending a request the vault answered
// with a transient 401 (AKV10046).
const transientPause = 500 * time.Millisecond

// maxTransientPeek bounds how much of a 401's body is searched for a
// transient refusal; AKV10046 starts the message, some 50 bytes in.
const maxTransientPeek = 512

// transient401 reports whether a 401's body says AKV10046 (the vault could
// not resolve the key used for signature validation).
func transient401(body []byte) bool {
	return bytes.Contains(body[:min(len(body), maxTransientPeek)], []byte("AKV10046"))
}

// retryable: 429 means the vault refused before doing anything, so any
// method may be sent again. 503 may come after the work was done, so only
// GET and HEAD are retried (a retried PUT would create a second secret
// version; a retried DELETE could answer 404 for a delete that succeeded).
func retryable(method []byte, status int) bool {
	switch status {
	case http.StatusTooManyRequests:
		return true
	case http.StatusServiceUnavailable:
		return string(method) == http.MethodGet || string(method) == http.MethodHead
	}
	return false
}

// retryWait honours Retry-After up to RetryMaxWait; without one it backs off
// exponentially from 500ms with full jitter.
func (p *Proxy) retryWait(retryAfter string, attempt int) time.Duration {
	if d, ok := ParseRetryAfter(retryAfter, time.Now()); ok {
		return min(d, p.o.RetryMaxWait)
	}
	d := min(500*time.Millisecond<<attempt, p.o.RetryMaxWait)
	return d/2 + rand.N(d/2+1)
}

func (p *Proxy) countRetry(reason string) { p.o.Metrics.CountRetry(reason) }

// parseChallenge reads a 401's WWW-Authenticate challenges (zero when there
// is no Bearer challenge; a bad claims parameter leaves the rest readable).
func parseChallenge(resp *fasthttp.Response) kvwire.Challenge {
	var vals []string
	for k, v := range resp.Header.All() {
		if bytes.EqualFold(k, []byte("WWW-Authenticate")) {
			vals = append(vals, string(v))
		}
	}
	if len(vals) == 0 {
		return kvwire.Challenge{}
	}
	c, _ := kvwire.ParseChallenge(strings.Join(vals, ", "))
	return c
}

// ParseRetryAfter reads a Retry-After value: delay seconds or an HTTP date,
// capped at a day. It reports false for an absent or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	const longest = 24 * time.Hour // a longer wait is no retry hint
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return min(time.Duration(min(n, int64(longest/time.Second)))*time.Second, longest), true
	}
	if t, err := http.ParseTime(v); err == nil {
		// t.Sub saturates rather than overflowing, so the clamp holds for
		// any date.
		return min(max(t.Sub(now), 0), longest), true
	}
	return 0, false
}

// bearerHeader is the Authorization value for one token, made once per
// token rather than once per request (an Entra token is 1–3 KB).
type bearerHeader struct {
	token string
	value []byte
}

// bearer returns "Bearer <token>".
func (p *Proxy) bearer(token string) []byte {
	if b := p.authz.Load(); b != nil && b.token == token {
		return b.value
	}
	b := &bearerHeader{token: token, value: append([]byte("Bearer "), token...)}
	p.authz.Store(b)
	return b.value
}
