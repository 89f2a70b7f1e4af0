package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
)

// upstream is the reverse proxy's transport: it injects the token, sends the
// request to the vault, and retries what is safe to retry. The request's
// body was buffered by ServeHTTP, so every attempt sends it whole.
type upstream struct{ p *Proxy }

// Retry reasons, the values of kvproxy_upstream_retries_total{reason}.
const (
	retryUnauthorized = metrics.RetryUnauthorized
	retryThrottled    = metrics.RetryThrottled
	retryUnavailable  = metrics.RetryUnavailable
)

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	p := u.p
	ctx := req.Context()
	st := stateOf(ctx)
	if st == nil {
		st = &requestState{}
	}
	tok, err := p.o.Tokens.Token(ctx)
	if err != nil {
		return nil, tokenFailure{err}
	}
	renewed, retries := false, 0 // a 401 renewal does not use up KVPROXY_RETRY_MAX
	paused := false              // the one retry of a transient 401 (AKV10046) was made
	for attempt := 0; ; attempt++ {
		// A RoundTripper must not modify its request: send a copy.
		out := req.Clone(ctx)
		if attempt > 0 && st.body != nil {
			out.Body = io.NopCloser(bytes.NewReader(st.body))
		}
		out.Header.Set("Authorization", "Bearer "+tok.Token)
		st.token = tok.Token
		start := time.Now()
		resp, err := p.o.Transport.RoundTrip(out)
		p.o.Metrics.ObserveUpstream(time.Since(start).Seconds())
		if err != nil {
			return nil, err
		}
		st.requestID = resp.Header.Get("x-ms-request-id")
		if resp.StatusCode == http.StatusUnauthorized {
			st.challenge = parseChallenge(resp.Header)
		}

		switch {
		case resp.StatusCode == http.StatusUnauthorized && !paused && idempotent(req.Method) && transient401(resp):
			// The vault could not resolve the token's signing key: real
			// reports show the same token accepted moments later. Send the
			// request once more after a short pause, with a renewed token
			// when the credential has another (this is then the one 401
			// renewal, counted as such), else with the same one: that
			// resend is not counted, as no retry reason of
			// kvproxy_upstream_retries_total fits it.
			paused = true
			if dl, ok := ctx.Deadline(); ok && time.Now().Add(transientPause).After(dl) {
				return resp, nil
			}
			discard(resp)
			p.o.Logger.DebugContext(ctx, "the vault could not resolve the token's signing key (AKV10046); sending the request once more",
				slog.String("method", req.Method), slog.String("path", req.URL.Path))
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(transientPause):
			}
			if !renewed {
				renewed = true
				if next, rerr := p.o.Tokens.Renew(ctx, tok.Token, st.challenge); rerr == nil {
					p.countRetry(retryUnauthorized)
					tok = next
				}
			}
			continue
		case resp.StatusCode == http.StatusUnauthorized && !renewed:
			// The vault rejected the token: it was revoked, or a claims
			// challenge (CAE) asks for a new one. Get another and try once.
			renewed = true
			next, rerr := p.o.Tokens.Renew(ctx, tok.Token, st.challenge)
			if rerr != nil {
				return resp, nil // diagnose the vault's 401 as it is
			}
			discard(resp)
			p.countRetry(retryUnauthorized)
			tok = next
			continue
		case retries < p.o.RetryMax && retryable(req.Method, resp.StatusCode):
			wait := p.retryWait(resp.Header.Get("Retry-After"), retries)
			retries++
			if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
				return resp, nil // no time left to wait: the client gets the 429/503
			}
			discard(resp)
			reason := retryThrottled
			if resp.StatusCode == http.StatusServiceUnavailable {
				reason = retryUnavailable
			}
			p.countRetry(reason)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		return resp, nil
	}
}

// transientPause is the wait before resending a request the vault answered
// with a transient 401 (AKV10046).
const transientPause = 500 * time.Millisecond

// maxTransientPeek bounds how much of a 401's body is read to recognise a
// transient one; AKV10046 starts the message, some 50 bytes in.
const maxTransientPeek = 512

func idempotent(method string) bool { return method == http.MethodGet || method == http.MethodHead }

// transient401 reports whether a 401's body says AKV10046 (the vault could
// not resolve the key used for signature validation). It reads at most
// maxTransientPeek bytes and puts them back in front of the body, so the
// answer can still be diagnosed and passed on whole.
func transient401(resp *http.Response) bool {
	peek, err := io.ReadAll(io.LimitReader(resp.Body, maxTransientPeek))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(peek), resp.Body), resp.Body}
	return err == nil && bytes.Contains(peek, []byte("AKV10046"))
}

// retryable: 429 means the vault refused before doing anything, so any
// method may be sent again. 503 may come after the work was done, so only
// GET and HEAD are retried (a retried PUT would create a second secret
// version; a retried DELETE could answer 404 for a delete that succeeded).
func retryable(method string, status int) bool {
	switch status {
	case http.StatusTooManyRequests:
		return true
	case http.StatusServiceUnavailable:
		return method == http.MethodGet || method == http.MethodHead
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
func parseChallenge(h http.Header) kvwire.Challenge {
	v := h.Values("WWW-Authenticate")
	if len(v) == 0 {
		return kvwire.Challenge{}
	}
	c, _ := kvwire.ParseChallenge(strings.Join(v, ", "))
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

// discard drains a little of a response body so the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck
	resp.Body.Close()
}
