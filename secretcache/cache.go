package secretcache

import (
	"bytes"
	"container/list"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults of the contract's variables (KVPROXY_CACHE_STALE_IF_ERROR,
// KVPROXY_CACHE_MAX_BYTES) and of the other options.
const (
	DefaultStaleIfError    = 24 * time.Hour
	DefaultMaxBytes        = 16 << 20
	DefaultRefreshAhead    = 0.2
	DefaultFetchTimeout    = time.Minute
	DefaultRetryAfterError = time.Second
	// MaxEntryFraction: an answer whose body is larger than MaxBytes divided
	// by this is not stored, so one item cannot flush the cache.
	MaxEntryFraction = 8
	// FallbackDiagnosis is the diagnosis of a Stale answer whose failed
	// fetch named none (diagnose.UpstreamUnavailable).
	FallbackDiagnosis = "upstream-unavailable"
)

// Options configure a [Cache].
type Options struct {
	// TTL is how long an entry is served without asking the vault. New
	// returns nil (the cache is off) when it is not positive.
	TTL time.Duration
	// StaleIfError is how long past its TTL an entry may still be served
	// when the vault cannot answer. Zero or negative: never; pass
	// [DefaultStaleIfError] for the contract's default.
	StaleIfError time.Duration
	// MaxBytes bounds the stored bodies' bytes (default [DefaultMaxBytes]).
	MaxBytes int64
	// RefreshAhead is the last fraction of the TTL in which a read starts a
	// background refresh (default [DefaultRefreshAhead]; negative: none).
	RefreshAhead float64
	// FetchTimeout bounds a fetch (default [DefaultFetchTimeout]); a
	// coalesced fetch is also bounded by the deadline of the read that
	// started it.
	FetchTimeout time.Duration
	// RetryAfterError: after a fetch of a key failed transiently, reads of
	// it past its TTL are answered Stale at once, and a background fetch
	// tries the vault again at most this often (default
	// [DefaultRetryAfterError]). So in an outage only the first read waits
	// for the vault to fail.
	RetryAfterError time.Duration
	// Observer receives the cache's metrics (nil: none).
	Observer Observer
}

// Observer receives the cache's metrics; *metrics.CacheMetrics implements
// it. Its methods are called with the cache's lock held (ObserveSize, so
// the gauges never go back in time) or on the read path: they must be quick
// and must not call the cache.
type Observer interface {
	// ObserveResult counts a read: hit, miss, coalesced, stale or bypass
	// ([Outcome.String]).
	ObserveResult(result string)
	// ObserveEviction counts an entry dropped to stay within MaxBytes.
	ObserveEviction()
	// ObserveSize reports the entries held and their body bytes.
	ObserveSize(entries int, bytes int64)
}

// Mode is what the client asked of the cache.
type Mode uint8

const (
	// Normal reads from the cache.
	Normal Mode = iota
	// NoCache (Cache-Control: no-cache) asks the vault and stores its 200.
	NoCache
	// NoStore (Cache-Control: no-store) asks the vault and stores nothing;
	// a refusal still drops the name's entries.
	NoStore
)

// Fetch asks the vault once (with the proxy's retries and token renewal)
// and reads the answer whole. See [Result] and [Classify]. Only the first
// of the reads sharing a fetch runs its Fetch, in a goroutine of its own:
// it must not panic, and every reader must take what it needs from the
// Result, not from side effects of its own Fetch.
type Fetch func(ctx context.Context) (Result, error)

// Cache holds vault answers in memory. Its methods are safe for concurrent
// use. A nil *Cache is off: Get calls fetch every time and answers [Off],
// Invalidate does nothing.
type Cache struct {
	o        Options
	maxEntry int64
	sf       singleflight.Group

	mu      sync.Mutex
	entries map[string]*entry // by key
	names   map[string]*nameState
	lru     list.List // of *entry, most recently used first
	bytes   int64
	seq     uint64 // numbers fetches in the order they start
	epoch   uint64 // the last generation given to a name
}

// entry is a stored answer and its schedule.
type entry struct {
	Entry
	key, name  string
	seq        uint64    // the fetch that produced it
	refreshAt  time.Time // a read from here on starts a background refresh
	freshUntil time.Time // served as a Hit before this
	staleUntil time.Time // may be served as Stale before this
	failing    bool      // the last fetch of the key failed transiently
	failedAt   time.Time
	diagnosis  string
	fetching   bool // a background fetch is in flight
	elem       *list.Element
}

// nameState is what the cache knows of one name: its entries, and a
// generation that Invalidate and refusals advance, so a fetch that started
// before is neither stored nor joined by later reads. Generations come from
// one counter for all names, so a name forgotten and met again never
// reuses one that a finishing fetch still holds.
type nameState struct {
	gen      uint64
	keys     map[string]*entry
	inflight int
}

// New returns a cache, or nil (off) when o.TTL is not positive.
func New(o Options) *Cache {
	if o.TTL <= 0 {
		return nil
	}
	if o.StaleIfError < 0 {
		o.StaleIfError = 0
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.RefreshAhead == 0 {
		o.RefreshAhead = DefaultRefreshAhead
	}
	o.RefreshAhead = min(max(o.RefreshAhead, 0), 1)
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.RetryAfterError <= 0 {
		o.RetryAfterError = DefaultRetryAfterError
	}
	c := &Cache{o: o, maxEntry: o.MaxBytes / MaxEntryFraction, entries: map[string]*entry{}, names: map[string]*nameState{}}
	if o.Observer != nil {
		o.Observer.ObserveSize(0, 0)
	}
	return c
}

// Peek answers key from memory when Get, in Normal mode, would answer it a
// Hit and start nothing: the entry is fresh and not yet due for its refresh
// ahead. It counts the hit like Get. On false the caller calls Get, which
// decides everything else; Peek takes no fetch, so a hit costs its caller
// no closure.
func (c *Cache) Peek(key string) (Answer, bool) {
	if c == nil {
		return Answer{}, false
	}
	now := time.Now()
	c.mu.Lock()
	e := c.entries[key]
	// freshUntil is never past staleUntil, so a fresh entry is live.
	if e == nil || !now.Before(e.freshUntil) || now.Compare(e.refreshAt) >= 0 {
		c.mu.Unlock()
		return Answer{}, false
	}
	c.lru.MoveToFront(e.elem)
	a := Answer{Entry: e.Entry, Outcome: Hit, Age: now.Sub(e.StoredAt)}
	c.mu.Unlock()
	c.observe(Hit)
	return a, true
}

// Get answers a read of key (from [Key]) of the item name (from
// [Cacheable]).
//
// In Normal mode a fresh entry is a [Hit]; in the last RefreshAhead of its
// TTL the read also starts one background refresh, and does not wait for
// it. Otherwise the vault is asked through fetch: concurrent reads of one
// key share one fetch ([Miss] for the read that started it, [Coalesced] for
// the others), which runs under a context none of them can cancel, bounded
// by the first one's deadline and FetchTimeout; a read whose ctx ends stops
// waiting with ctx's error. When that fetch fails transiently ([Classify])
// and an entry is at most StaleIfError past its TTL, the entry is answered
// [Stale] with the failure's diagnosis; otherwise the fetch's Result and
// error are handed back as they came. An entry past its attributes.exp is
// never served.
//
// NoCache and NoStore always call fetch, under ctx, never serve an entry,
// and answer [Bypass]; NoCache stores the 200.
//
// Whatever the mode, a 200 replaces the key's entry (NoStore aside), and a
// 403 or 404 drops every entry of name.
func (c *Cache) Get(ctx context.Context, key, name string, mode Mode, fetch Fetch) (Answer, error) {
	if c == nil {
		res, err := fetch(ctx)
		return answerOf(res, Off), err
	}
	name = lowerASCII(name)
	if mode != Normal {
		c.observe(Bypass)
		return c.bypass(ctx, key, name, mode, fetch)
	}
	now := time.Now()
	c.mu.Lock()
	e := c.liveLocked(key, now)
	if e != nil && now.Before(e.freshUntil) {
		c.lru.MoveToFront(e.elem)
		bg := false
		if now.Compare(e.refreshAt) >= 0 && c.mayRetryLocked(e, now) {
			c.startLocked(ctx, e, fetch)
			bg = true
		}
		a := Answer{Entry: e.Entry, Outcome: Hit, Age: now.Sub(e.StoredAt), Background: bg}
		c.mu.Unlock()
		c.observe(Hit)
		return a, nil
	}
	if e != nil && e.failing {
		// The vault was failing for this key: answer from memory at once.
		c.lru.MoveToFront(e.elem)
		bg := false
		if c.mayRetryLocked(e, now) {
			c.startLocked(ctx, e, fetch)
			bg = true
		}
		a := Answer{Entry: e.Entry, Outcome: Stale, Age: now.Sub(e.StoredAt), Diagnosis: e.diagnosis, Background: bg}
		c.mu.Unlock()
		c.observe(Stale)
		return a, nil
	}
	gen := c.genLocked(name)
	c.mu.Unlock()

	led := false
	ch := c.sf.DoChan(flightKey(key, gen), func() (any, error) {
		led = true
		return c.flight(ctx, key, name, gen, fetch), nil
	})
	select {
	case <-ctx.Done():
		return Answer{Outcome: Miss, Background: true}, ctx.Err()
	case r := <-ch:
		f := r.Val.(*flown)
		out := Coalesced
		if led {
			out = Miss
		}
		if f.stale != nil {
			c.observe(Stale)
			return Answer{Entry: *f.stale, Outcome: Stale, Age: time.Since(f.stale.StoredAt), Diagnosis: f.diagnosis}, nil
		}
		c.observe(out)
		return answerOf(f.res, out), f.err
	}
}

// flown is the outcome of one fetch, shared by the reads that waited for it.
type flown struct {
	res       Result
	err       error
	stale     *Entry // the entry to serve instead, when the fetch failed transiently
	diagnosis string
}

// mayRetryLocked reports whether a background fetch of e may start now.
func (c *Cache) mayRetryLocked(e *entry, now time.Time) bool {
	return !e.fetching && (!e.failing || now.Sub(e.failedAt) >= c.o.RetryAfterError)
}

// startLocked starts a background fetch of e's key, shared with reads that
// miss meanwhile; nobody waits for its answer.
func (c *Cache) startLocked(ctx context.Context, e *entry, fetch Fetch) {
	e.fetching = true
	gen := c.genLocked(e.name)
	key, name := e.key, e.name
	// DoChan runs the fetch in its own goroutine, and its channel is
	// buffered: leaving it unread leaks nothing.
	c.sf.DoChan(flightKey(key, gen), func() (any, error) {
		return c.flight(ctx, key, name, gen, fetch), nil
	})
}

// flight runs one shared fetch and applies its answer.
func (c *Cache) flight(parent context.Context, key, name string, gen uint64, fetch Fetch) *flown {
	c.mu.Lock()
	ns := c.nameLocked(name)
	ns.inflight++
	c.seq++
	seq := c.seq
	c.mu.Unlock()

	ctx := context.WithoutCancel(parent)
	var cancel context.CancelFunc
	if d, ok := parent.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	ctx, cancel = context.WithTimeout(ctx, c.o.FetchTimeout)
	defer cancel()
	res, err := fetch(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	ns.inflight--
	f := &flown{res: res, err: err}
	f.stale, f.diagnosis = c.applyLocked(key, name, gen, seq, true, res, err, time.Now())
	c.pruneNameLocked(name)
	return f
}

// bypass serves NoCache and NoStore: one fetch under the reader's ctx.
func (c *Cache) bypass(ctx context.Context, key, name string, mode Mode, fetch Fetch) (Answer, error) {
	c.mu.Lock()
	ns := c.nameLocked(name)
	gen := ns.gen
	ns.inflight++
	c.seq++
	seq := c.seq
	c.mu.Unlock()

	res, err := fetch(ctx)

	c.mu.Lock()
	ns.inflight--
	c.applyLocked(key, name, gen, seq, mode == NoCache, res, err, time.Now())
	c.pruneNameLocked(name)
	c.mu.Unlock()
	return answerOf(res, Bypass), err
}

// applyLocked brings the cache up to date with a fetch's answer: a 200 is
// stored (if store) when no newer fetch has been stored and nothing has
// invalidated the name since the fetch began; a refusal drops the name; a
// transient failure marks the key's entry as failing and gives it back if
// it may be served stale.
func (c *Cache) applyLocked(key, name string, gen, seq uint64, store bool, res Result, err error, now time.Time) (*Entry, string) {
	old := c.entries[key]
	if old != nil && old.seq < seq {
		old.fetching = false
	}
	switch Classify(res.Status, err) {
	case Store:
		if !store || c.names[name].gen != gen || (old != nil && old.seq > seq) {
			return nil, ""
		}
		if old != nil {
			c.removeLocked(old)
		}
		if e := c.newEntry(key, name, seq, res, now); e != nil {
			c.insertLocked(e, now)
		}
	case Refused:
		c.dropNameLocked(name)
	case Transient:
		e := c.liveLocked(key, now)
		if e == nil || e.seq > seq { // none, or stored by a later fetch
			return nil, ""
		}
		d := res.Diagnosis
		if d == "" {
			d = FallbackDiagnosis
		}
		e.failing, e.failedAt, e.diagnosis = true, now, d
		if now.Before(e.staleUntil) {
			stale := e.Entry
			return &stale, d
		}
	}
	c.observeSizeLocked()
	return nil, ""
}

// newEntry makes the entry of a 200, or nil when it must not be stored:
// too large, compressed (the body would not be what a client that did not
// ask for the encoding can read, nor JSON to read exp from) or expired.
func (c *Cache) newEntry(key, name string, seq uint64, res Result, now time.Time) *entry {
	if int64(len(res.Body)) > c.maxEntry {
		return nil
	}
	var hdr []Field
	for _, f := range res.Header {
		if strings.EqualFold(f.Name, "Content-Encoding") && !strings.EqualFold(f.Value, "identity") {
			return nil
		}
		if n, ok := KeepHeader(f.Name); ok {
			hdr = append(hdr, Field{n, f.Value})
		}
	}
	e := &entry{
		Entry: Entry{Status: 200, Header: hdr, Body: bytes.Clone(res.Body), StoredAt: now},
		key:   key, name: name, seq: seq,
		refreshAt:  now.Add(c.o.TTL - time.Duration(float64(c.o.TTL)*c.o.RefreshAhead)),
		freshUntil: now.Add(c.o.TTL),
		staleUntil: now.Add(c.o.TTL + c.o.StaleIfError),
	}
	if e.Body == nil {
		e.Body = []byte{}
	}
	if exp, ok := ExpiresAt(res.Body); ok {
		if !now.Before(exp) {
			return nil
		}
		e.Expires = exp
		if exp.Before(e.freshUntil) {
			e.freshUntil = exp
		}
		if exp.Before(e.staleUntil) {
			e.staleUntil = exp
		}
	}
	return e
}

// liveLocked returns key's entry if it may still be served, fresh or stale,
// and drops it when it may not.
func (c *Cache) liveLocked(key string, now time.Time) *entry {
	e := c.entries[key]
	if e == nil {
		return nil
	}
	if now.Before(e.staleUntil) {
		return e
	}
	c.removeLocked(e)
	c.pruneNameLocked(e.name)
	c.observeSizeLocked()
	return nil
}

// insertLocked stores e, first dropping the least recently used entries
// that may no longer be served at all (so a secret nobody reads does not
// stay in memory until evicted), then evicting for MaxBytes.
func (c *Cache) insertLocked(e *entry, now time.Time) {
	for back := c.lru.Back(); back != nil; back = c.lru.Back() {
		dead := back.Value.(*entry)
		if now.Before(dead.staleUntil) {
			break
		}
		c.removeLocked(dead)
		c.pruneNameLocked(dead.name)
	}
	e.elem = c.lru.PushFront(e)
	c.entries[e.key] = e
	c.nameLocked(e.name).keys[e.key] = e
	c.bytes += int64(len(e.Body))
	for c.bytes > c.o.MaxBytes {
		victim := c.lru.Back().Value.(*entry)
		c.removeLocked(victim)
		c.pruneNameLocked(victim.name)
		if c.o.Observer != nil {
			c.o.Observer.ObserveEviction()
		}
	}
}

func (c *Cache) removeLocked(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
	if ns := c.names[e.name]; ns != nil {
		delete(ns.keys, e.key)
	}
	c.bytes -= int64(len(e.Body))
}

// Invalidate drops every entry of name ("secrets/db-password"; case does
// not matter) and makes sure nothing a fetch already in flight brings back
// is stored or handed to a later read. A certificate's name also drops the
// key and the secret of that name, which Key Vault keeps beside it.
func (c *Cache) Invalidate(name string) {
	if c == nil {
		return
	}
	name = lowerASCII(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropNameLocked(name)
	if item, ok := strings.CutPrefix(name, "certificates/"); ok {
		c.dropNameLocked("keys/" + item)
		c.dropNameLocked("secrets/" + item)
	}
	c.observeSizeLocked()
}

func (c *Cache) dropNameLocked(name string) {
	ns := c.names[name]
	if ns == nil {
		return
	}
	c.epoch++
	ns.gen = c.epoch
	for _, e := range ns.keys {
		c.removeLocked(e)
	}
	c.pruneNameLocked(name)
}

// Size reports the entries held and their body bytes.
func (c *Cache) Size() (entries int, bytes int64) {
	if c == nil {
		return 0, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

// MaxEntryBytes is the largest body the cache stores; 0 when it is off.
func (c *Cache) MaxEntryBytes() int64 {
	if c == nil {
		return 0
	}
	return c.maxEntry
}

func (c *Cache) nameLocked(name string) *nameState {
	ns := c.names[name]
	if ns == nil {
		ns = &nameState{gen: c.epoch, keys: map[string]*entry{}}
		c.names[name] = ns
	}
	return ns
}

func (c *Cache) genLocked(name string) uint64 {
	if ns := c.names[name]; ns != nil {
		return ns.gen
	}
	return c.epoch
}

// pruneNameLocked forgets a name with no entries and no fetch in flight.
func (c *Cache) pruneNameLocked(name string) {
	if ns := c.names[name]; ns != nil && len(ns.keys) == 0 && ns.inflight == 0 {
		delete(c.names, name)
	}
}

func (c *Cache) observeSizeLocked() {
	if c.o.Observer != nil {
		c.o.Observer.ObserveSize(len(c.entries), c.bytes)
	}
}

func (c *Cache) observe(o Outcome) {
	if c.o.Observer != nil {
		c.o.Observer.ObserveResult(o.String())
	}
}

// flightKey names a shared fetch: the key and the name's generation, so a
// read after Invalidate never joins a fetch that began before it.
func flightKey(key string, gen uint64) string {
	return key + "\x00" + strconv.FormatUint(gen, 10)
}

func answerOf(r Result, o Outcome) Answer {
	return Answer{Entry: Entry{Status: r.Status, Header: r.Header, Body: r.Body, Attempts: r.Attempts}, Outcome: o}
}
