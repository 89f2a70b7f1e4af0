package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// maxErrorsShown bounds the failures kept for the report.
const maxErrorsShown = 5

// driver sends the soak's requests to kvproxy: reads of a few secrets and,
// every writeEvery-th request when it is not 0, a write that sets one of
// them to the value it already has (so every read can be checked, and a
// cached read is invalidated now and then).
type driver struct {
	client     *fasthttp.Client
	base       string            // http://127.0.0.1:PORT
	secrets    []string          // names read, in turn
	values     map[string]string // their values
	writeEvery int
	timeout    time.Duration // of one request
	inflight   chan struct{} // bounds the requests in flight

	done, failed, hits atomic.Int64

	mu        sync.Mutex
	lat       []float64 // ms from when it was due, of each request finished since take
	firstErrs []string
}

// newDriver returns a driver with a pool of conns connections to base.
func newDriver(base string, secrets map[string]string, writeShare float64, conns, maxInflight int, timeout time.Duration) *driver {
	d := &driver{
		client: &fasthttp.Client{
			MaxConnsPerHost:    conns,
			MaxConnWaitTimeout: timeout,
			// Under kvproxy's 2-minute idle timeout: with the pool used in
			// turn (FIFO, fasthttp's default) no connection idles out, so
			// kvproxy serves a constant number of them.
			MaxIdleConnDuration: 90 * time.Second,
			ReadTimeout:         timeout,
			WriteTimeout:        timeout,
		},
		base:     base,
		values:   secrets,
		timeout:  timeout,
		inflight: make(chan struct{}, maxInflight),
	}
	for name := range secrets {
		d.secrets = append(d.secrets, name)
	}
	if writeShare > 0 {
		d.writeEvery = max(1, int(1/writeShare+.5))
	}
	return d
}

// warm opens the client's connections before the measured run: every
// connection sends a few reads at the same time.
func (d *driver) warm() {
	var wg sync.WaitGroup
	for c := range d.client.MaxConnsPerHost {
		wg.Go(func() {
			for i := range 3 {
				d.do(c+i, time.Now(), time.Now())
			}
		})
	}
	wg.Wait()
}

// run sends rate requests per second from start, n at most, until ctx
// ends. It is an open loop: a request is sent when it is due whether or not
// earlier ones have returned; one due while the in-flight bound is reached
// is not sent and counts as a failure. It returns when every request sent
// has finished (each within the request timeout) and says how many were due.
func (d *driver) run(ctx context.Context, rate, n int, start time.Time) int {
	interval := time.Second / time.Duration(rate)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return i
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return i
		}
		select {
		case d.inflight <- struct{}{}:
			wg.Go(func() {
				defer func() { <-d.inflight }()
				d.do(i, due, start)
			})
		default:
			d.fail(due, start, fmt.Sprintf("not sent: %d requests already in flight", cap(d.inflight)))
		}
	}
	return n
}

// do sends request i, due at due, and records how it went.
func (d *driver) do(i int, due, start time.Time) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	name := d.secrets[i%len(d.secrets)]
	req.SetRequestURI(d.base + "/secrets/" + name)
	req.Header.Set("Metadata", "true")
	write := d.writeEvery > 0 && i%d.writeEvery == d.writeEvery-1
	if write {
		req.Header.SetMethod(fasthttp.MethodPut)
		req.Header.SetContentType("application/json")
		req.SetBodyString(`{"value":"` + d.values[name] + `"}`)
	}
	err := d.client.DoTimeout(req, resp, d.timeout)
	what := req.Header.Method()
	switch {
	case err != nil:
		d.fail(due, start, fmt.Sprintf("%s /secrets/%s: %v", what, name, err))
	case resp.StatusCode() < 200 || resp.StatusCode() > 299:
		d.fail(due, start, fmt.Sprintf("%s /secrets/%s: status %d: %.300s", what, name, resp.StatusCode(), resp.Body()))
	case !bytes.Contains(resp.Body(), []byte(`"value":"`+d.values[name]+`"`)):
		d.fail(due, start, fmt.Sprintf("%s /secrets/%s: status %d without the secret's value: %.300s", what, name, resp.StatusCode(), resp.Body()))
	default:
		if string(resp.Header.Peek("X-Cache")) == "HIT" {
			d.hits.Add(1)
		}
		d.finish(due, "")
	}
}

func (d *driver) fail(due, start time.Time, msg string) {
	d.failed.Add(1)
	d.finish(due, fmt.Sprintf("at %v: %s", due.Sub(start).Round(time.Millisecond), msg))
}

// finish records a finished request and, when msg is not "", its failure.
func (d *driver) finish(due time.Time, msg string) {
	ms := float64(time.Since(due).Microseconds()) / 1000
	d.done.Add(1)
	d.mu.Lock()
	d.lat = append(d.lat, ms)
	if msg != "" && len(d.firstErrs) < maxErrorsShown {
		d.firstErrs = append(d.firstErrs, msg)
	}
	d.mu.Unlock()
}

// take returns the latencies recorded since the previous take.
func (d *driver) take() []float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	lat := d.lat
	d.lat = make([]float64, 0, cap(lat))
	return lat
}

// errors returns the first failures.
func (d *driver) errors() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.firstErrs)
}
