package azfake

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// VaultFaults are a test's controls over a [Vault]: latency, injected
// failures, answers cut off or trickled, and a TLS black hole. They are kept
// apart from the Vault so the playground's vault (`kvproxy dev`) has none; a
// test creates one and passes it as [VaultOptions].Faults. The zero value
// injects nothing. It is safe for concurrent use.
type VaultFaults struct {
	mu      sync.Mutex
	latency time.Duration
	fail    failures
	resets  int // answers still to cut off and reset
	slow    slowBody
	hole    chan struct{} // non-nil while new TLS handshakes are held; closed when lifted
	held    int           // handshakes held in the black hole
}

// FailNext makes the next n requests, whatever their path, answer status:
// 429 with a Throttled body, 503 with ServiceUnavailable, 500 with
// InternalServerError, any other status with a body named after it. The
// answers carry Retry-After: retryAfter when it is not "". n <= 0 cancels.
// A storm of 5xx is FailNext with a large n, ended by FailNext(0, 0, "").
func (f *VaultFaults) FailNext(status, n int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail.set(status, n, retryAfter)
}

// SetLatency makes every request wait d, or until its context is done, before
// it is handled: the status line comes late (slow headers), and a request
// whose client gives up first is not carried out. Zero turns latency off.
func (f *VaultFaults) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// ResetNext makes the next n requests (after those FailNext answers) be
// carried out as usual, a PUT storing its secret, but each answer stops
// halfway through its body: the status line, the headers (with the whole
// body's Content-Length) and half the body are written, then the connection
// is reset (closed with SO_LINGER 0, so the client gets a TCP RST). The
// vault did the work; the client cannot know it. Only answers with a body
// are cut. n <= 0 cancels.
func (f *VaultFaults) ResetNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets = max(n, 0)
}

// SetSlowBody makes answers (after those FailNext and ResetNext take) send
// their status line and headers at once and then their body one byte every
// d, flushed each time, until the client goes away. SetSlowBody(0) turns it
// off and lets the answers being trickled finish at once.
func (f *VaultFaults) SetSlowBody(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slow.set(max(d, 0))
}

// SetBlackHole, while on, holds every new TLS connection to the vault in its
// handshake: the connection is accepted and the client's hello read, but the
// vault sends nothing back, as a firewall or a broken load balancer that
// swallows packets would. Turning it off lets the held handshakes complete.
// Connections already established keep working. A test that turns it on
// should turn it off before the vault closes, or the held handshakes stay
// blocked. It takes effect for vaults started with [Vault.Start].
func (f *VaultFaults) SetBlackHole(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case on && f.hole == nil:
		f.hole = make(chan struct{})
	case !on && f.hole != nil:
		close(f.hole)
		f.hole = nil
	}
}

// HeldHandshakes returns the number of TLS handshakes the black hole holds.
func (f *VaultFaults) HeldHandshakes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

// intercept applies the faults to a request the vault has recorded. It
// returns the writer the vault answers through (w, or one that cuts off or
// trickles the answer) and reports whether it answered (or dropped) the
// request itself.
func (f *VaultFaults) intercept(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
	if f == nil {
		return w, false
	}
	f.mu.Lock()
	latency := f.latency
	f.mu.Unlock()
	if !sleep(r.Context(), latency) {
		return w, true // the client is gone: nobody reads an answer
	}
	f.mu.Lock()
	status, retryAfter, failing := f.fail.take()
	reset := !failing && f.resets > 0
	if reset {
		f.resets--
	}
	slow := !failing && !reset && f.slow.every > 0
	f.mu.Unlock()
	switch {
	case failing:
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeInjectedFailure(w, status)
		return w, true
	case reset:
		return &resetWriter{ResponseWriter: w}, false
	case slow:
		return &slowWriter{ResponseWriter: w, f: f, ctx: r.Context()}, false
	}
	return w, false
}

// tlsConfig returns cfg with the black hole's hook: a GetConfigForClient
// that holds the handshake while the black hole is on (and then defers to
// cfg's own, if any).
func (f *VaultFaults) tlsConfig(cfg *tls.Config) *tls.Config {
	if f == nil || cfg == nil {
		return cfg
	}
	c := cfg.Clone()
	next := c.GetConfigForClient
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		f.holdHandshake(hello.Context())
		if next != nil {
			return next(hello)
		}
		return nil, nil // the original config
	}
	return c
}

// holdHandshake blocks while the black hole is on, or until ctx ends.
func (f *VaultFaults) holdHandshake(ctx context.Context) {
	f.mu.Lock()
	hole := f.hole
	if hole != nil {
		f.held++
	}
	f.mu.Unlock()
	if hole == nil {
		return
	}
	select {
	case <-hole:
	case <-ctx.Done():
	}
	f.mu.Lock()
	f.held--
	f.mu.Unlock()
}

// errAnswerCut is what a cut-off answer's writes return.
var errAnswerCut = errors.New("azfake: the answer was cut off by an injected reset")

// resetWriter writes the head and half the body of the first Write, then
// resets the connection.
type resetWriter struct {
	http.ResponseWriter
	status int
	done   bool
}

func (rw *resetWriter) WriteHeader(status int) {
	if rw.status == 0 {
		rw.status = status
	}
}

func (rw *resetWriter) Write(p []byte) (int, error) {
	if rw.done {
		return 0, errAnswerCut
	}
	rw.done = true
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	conn, buf, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		return 0, err
	}
	writeHead(buf.Writer, status, rw.Header())
	_, _ = buf.Write(p[:len(p)/2])
	_ = buf.Flush()
	resetConn(conn)
	return 0, errAnswerCut
}

// writeHead writes an HTTP/1.1 status line and headers.
func writeHead(w *bufio.Writer, status int, h http.Header) {
	fmt.Fprintf(w, "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	_ = h.Write(w)
	_, _ = w.WriteString("\r\n")
}

// resetConn closes c with SO_LINGER 0, so the peer gets a TCP RST rather
// than a FIN; a TLS connection is reset under its TLS layer, without a
// close_notify.
func resetConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}

// slowBody is the pace of trickled answers; changed is closed (and
// replaced) whenever it changes, waking the answers being trickled.
type slowBody struct {
	every   time.Duration
	changed chan struct{}
}

func (s *slowBody) set(d time.Duration) {
	s.every = d
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// slowWriter trickles the body: one byte per pause, flushed each time.
type slowWriter struct {
	http.ResponseWriter
	f   *VaultFaults
	ctx context.Context
}

func (sw *slowWriter) Write(p []byte) (int, error) {
	rc := http.NewResponseController(sw.ResponseWriter)
	for i := range p { // one pass over the body: at most len(p) pauses
		sw.f.mu.Lock()
		every, changed := sw.f.slow.every, sw.f.slow.changed
		sw.f.mu.Unlock()
		if every <= 0 {
			n, err := sw.ResponseWriter.Write(p[i:])
			return i + n, err
		}
		if _, err := sw.ResponseWriter.Write(p[i : i+1]); err != nil {
			return i, err
		}
		if err := rc.Flush(); err != nil {
			return i + 1, err
		}
		t := time.NewTimer(every)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-sw.ctx.Done():
			t.Stop()
			return i + 1, sw.ctx.Err()
		}
	}
	return len(p), nil
}

// IdentityFaults are a test's controls over an [IdentityServer]: an outage,
// failures with Retry-After, latency, answers that are not the protocol's,
// and holding token requests. They are kept apart from the IdentityServer so
// the playground's endpoint has none; a test creates one and passes it as
// [IdentityOptions].Faults. The zero value injects nothing. It is safe for
// concurrent use.
type IdentityFaults struct {
	mu      sync.Mutex
	down    bool
	latency time.Duration
	fail    failures
	raw     *rawAnswer
	waiting int
	gate    chan struct{} // non-nil while held; closed on release
}

// rawAnswer is an answer given instead of the protocol's.
type rawAnswer struct {
	status            int
	contentType, body string
}

// SetDown makes the endpoint answer every token request with App Service's
// 500 while down is true.
func (f *IdentityFaults) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// FailNext makes the next n token requests answer status with the App
// Service error body, carrying Retry-After: retryAfter when it is not "".
// n <= 0 cancels.
func (f *IdentityFaults) FailNext(status, n int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail.set(status, n, retryAfter)
}

// SetLatency makes every token request wait d, or until its client gives
// up, before it is handled. Zero turns latency off.
func (f *IdentityFaults) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// SetRawAnswer makes the endpoint answer every token request with status,
// a Content-Type of contentType (none when "") and exactly body: JSON of the
// wrong shape, a truncated body, an HTML error page. Status 0 turns it off.
func (f *IdentityFaults) SetRawAnswer(status int, contentType, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.raw = nil
	if status != 0 {
		f.raw = &rawAnswer{status: status, contentType: contentType, body: body}
	}
}

// Hold makes token requests block, before they are otherwise handled, until
// release is called or their context ends; [IdentityFaults.Waiting] counts
// them. Calling release more than once is harmless.
func (f *IdentityFaults) Hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gate == nil {
		f.gate = make(chan struct{})
	}
	gate := f.gate
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.gate == gate {
				f.gate = nil
			}
			close(gate)
		})
	}
}

// Waiting returns the number of token requests currently blocked by Hold.
func (f *IdentityFaults) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

// intercept applies the faults to a counted token request, in the order
// hold, latency, down, FailNext, raw answer; it reports whether it answered
// (or dropped) the request.
func (f *IdentityFaults) intercept(w http.ResponseWriter, r *http.Request) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	gate := f.gate
	if gate != nil {
		f.waiting++
	}
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
		if r.Context().Err() != nil {
			return true
		}
	}
	f.mu.Lock()
	latency := f.latency
	f.mu.Unlock()
	if !sleep(r.Context(), latency) {
		return true
	}
	f.mu.Lock()
	down := f.down
	status, retryAfter, failing := f.fail.take()
	raw := f.raw
	f.mu.Unlock()
	switch {
	case down:
		// Wording as captured from App Service (its typo included).
		writeJSON(w, http.StatusInternalServerError, msiError{500, "An unexpected error occured while fetching the AAD Token.", uuid.NewString()})
	case failing:
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		// Wording made up: no App Service answer but the 500 was captured.
		writeJSON(w, status, msiError{status, http.StatusText(status) + ".", uuid.NewString()})
	case raw != nil:
		if raw.contentType != "" {
			w.Header().Set("Content-Type", raw.contentType)
		}
		w.WriteHeader(raw.status)
		_, _ = w.Write([]byte(raw.body))
	default:
		return false
	}
	return true
}

// failures are the next n answers a fault control injects; their owner's
// mutex guards them.
type failures struct {
	n, status  int
	retryAfter string
}

func (fl *failures) set(status, n int, retryAfter string) {
	fl.n, fl.status, fl.retryAfter = max(n, 0), status, retryAfter
}

// take uses up one failure; ok is false when none is left.
func (fl *failures) take() (status int, retryAfter string, ok bool) {
	if fl.n <= 0 {
		return 0, "", false
	}
	fl.n--
	return fl.status, fl.retryAfter, true
}

// sleep waits d, or until ctx ends; it reports whether d passed. It returns
// true at once for d <= 0.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
