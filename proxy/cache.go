package proxy

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/secretcache"
)

// HeaderCache says how the secret cache answered a cacheable read.
const HeaderCache = "X-Cache"

// cacheable reports a read the secret cache may answer, and the secret
// (key, certificate) it names.
func cacheable(ctx *fasthttp.RequestCtx) (string, bool) {
	if !ctx.IsGet() {
		return "", false
	}
	path, _, _ := cutQuery(ctx.Request.Header.RequestURI())
	return secretcache.Cacheable(fasthttp.MethodGet, string(path))
}

// cacheMode reads what the client asked of the cache: Cache-Control
// no-store (nothing read or stored), no-cache or max-age=0, or Pragma:
// no-cache (ask the vault and refresh the entry).
func cacheMode(h *fasthttp.RequestHeader) secretcache.Mode {
	cc := h.Peek("Cache-Control")
	switch {
	case hasDirective(cc, "no-store"):
		return secretcache.NoStore
	case hasDirective(cc, "no-cache") || hasDirective(cc, "max-age=0") || hasDirective(h.Peek("Pragma"), "no-cache"):
		return secretcache.NoCache
	}
	return secretcache.Normal
}

func hasDirective(v []byte, d string) bool {
	for len(v) > 0 {
		var part []byte
		part, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(d)) {
			return true
		}
	}
	return false
}

// forwardCached answers a cacheable read from the secret cache, which asks
// the vault (one request for every concurrent miss) when it must.
func (p *Proxy) forwardCached(ctx *fasthttp.RequestCtx, st *requestState, name string) {
	path, query, _ := cutQuery(ctx.Request.Header.RequestURI())
	key := secretcache.Key(string(path), string(query), p.o.APIVersion)
	mode := cacheMode(&ctx.Request.Header)
	if mode == secretcache.Normal {
		if a, ok := p.o.Cache.Peek(key); ok {
			p.answerCached(ctx, st, a, nil)
			return
		}
	}
	a, err := p.getCached(ctx, st, key, name, mode)
	p.answerCached(ctx, st, a, err)
}

// getCached asks the cache for key, with a fetch it may run: what a Peek
// could not answer.
func (p *Proxy) getCached(ctx *fasthttp.RequestCtx, st *requestState, key, name string, mode secretcache.Mode) (secretcache.Answer, error) {
	// The fetch gets a request of its own, built from ctx only while ctx is
	// this request's: during Get, or before this request is answered when
	// the fetch may go on after it (a refresh ahead of the TTL), since
	// fasthttp then reuses ctx. A hit builds nothing.
	var once sync.Once
	var req *fasthttp.Request
	build := func() {
		req = new(fasthttp.Request)
		p.buildRequest(ctx, req)
	}
	a, err := p.o.Cache.Get(st.ctx, key, name, mode, func(fctx context.Context) (secretcache.Result, error) {
		once.Do(build)
		return p.fetchForCache(fctx, req)
	})
	if a.Background {
		once.Do(build)
	}
	return a, err
}

// answerCached writes the cache's answer (or its error) as ctx's response.
func (p *Proxy) answerCached(ctx *fasthttp.RequestCtx, st *requestState, a secretcache.Answer, err error) {
	st.cache = a.Outcome.String()
	if err != nil {
		p.fail(ctx, st, err)
		ctx.Response.Header.Set(HeaderCache, a.Outcome.Header())
		return
	}
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(a.Status)
	for _, f := range a.Header {
		switch {
		case strings.EqualFold(f.Name, "Content-Type"):
			resp.Header.SetContentType(f.Value)
		case isHopHeader([]byte(f.Name)) || strings.EqualFold(f.Name, "Content-Length") || strings.EqualFold(f.Name, "Transfer-Encoding"):
		default:
			resp.Header.Add(f.Name, f.Value)
		}
	}
	resp.SetBody(a.Body)
	switch a.Outcome {
	case secretcache.Stale:
		resp.Header.Set("Age", strconv.Itoa(int(a.Age.Seconds())))
		resp.Header.Set(HeaderDiagnosis, a.Diagnosis)
		p.countDiagnosis(a.Diagnosis)
	case secretcache.Hit:
		resp.Header.Set("Age", strconv.Itoa(int(a.Age.Seconds())))
	default:
		// The fetch's retries, for the diagnosis of a 429 or 5xx.
		st.retries, st.firstStatus = a.Attempts.Retries, a.Attempts.FirstStatus
		// A refusal is diagnosed for each caller, with the token the
		// fetch sent (the one held).
		if s := a.Status; s == fasthttp.StatusUnauthorized || s == fasthttp.StatusForbidden {
			if b := p.authz.Load(); b != nil {
				st.token = b.token
			}
			if s == fasthttp.StatusUnauthorized {
				st.challenge = parseChallenge(resp)
			}
		}
		p.respond(ctx, st)
	}
	resp.Header.Set(HeaderCache, a.Outcome.Header())
}

// fetchForCache asks the vault for the cache, with a request and a
// response of its own, and copies what every reader needs.
func (p *Proxy) fetchForCache(fctx context.Context, req *fasthttp.Request) (secretcache.Result, error) {
	deadline, ok := fctx.Deadline()
	if !ok {
		deadline = time.Now().Add(p.o.UpstreamTimeout)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var st requestState
	if err := p.exchange(fctx, deadline, &st, req, resp); err != nil {
		return secretcache.Result{Diagnosis: classify(err).diagnosis}, err
	}
	r := secretcache.Result{Status: resp.StatusCode(), Body: append([]byte(nil), resp.Body()...),
		Diagnosis: diagnose.UpstreamUnavailable, Attempts: secretcache.Attempts{Retries: st.retries, FirstStatus: st.firstStatus}}
	for k, v := range resp.Header.All() {
		r.Header = append(r.Header, secretcache.Field{Name: string(k), Value: string(v)})
	}
	return r, nil
}

// invalidate drops the cached entries of the item a successful write
// changed, before the answer goes back.
func (p *Proxy) invalidate(ctx *fasthttp.RequestCtx) {
	if s := ctx.Response.StatusCode(); s < 200 || s > 299 {
		return
	}
	path, _, _ := cutQuery(ctx.Request.Header.RequestURI())
	if name, ok := secretcache.Invalidates(string(ctx.Method()), string(path)); ok {
		p.o.Cache.Invalidate(name)
	}
}
