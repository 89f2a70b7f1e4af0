package secretcache

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
)

// Field is one response header.
type Field struct{ Name, Value string }

// storedHeaders is the allowlist of the vault's response headers an entry
// keeps and a HIT replays, in canonical form. x-ms-request-id is the id of
// the vault request that produced the entry (quote it with its Age).
// Nothing client-specific is kept (x-ms-client-request-id echoes a
// client's own id) and nothing describing one connection.
var storedHeaders = [...]string{"Content-Type", "X-Ms-Request-Id", "X-Ms-Keyvault-Region", "X-Ms-Keyvault-Service-Version"}

// KeepHeader reports whether an entry keeps the response header name
// (case-insensitive), and gives its canonical form.
func KeepHeader(name string) (canonical string, ok bool) {
	for _, h := range storedHeaders {
		if strings.EqualFold(name, h) {
			return h, true
		}
	}
	return "", false
}

// Entry is a vault answer as the cache gives it back. Body and Header are
// shared with other readers: the caller must not modify them. Entry's String, GoString and LogValue print
// its status and size, never its body, so a stray %v or slog attribute
// cannot leak a secret.
type Entry struct {
	Status int // always 200 for a stored entry
	Header []Field
	Body   []byte
	// StoredAt is when the vault answered.
	StoredAt time.Time
	// Expires is the item's attributes.exp, zero when it has none; an entry
	// is never served at or after it.
	Expires time.Time
	// Attempts is the fetch's, on an answer passed on rather than stored.
	Attempts Attempts
}

func (e Entry) String() string {
	return fmt.Sprintf("secretcache.Entry{Status: %d, Body: %d bytes, StoredAt: %s}", e.Status, len(e.Body), e.StoredAt.Format(time.RFC3339))
}

// GoString is String, for %#v.
func (e Entry) GoString() string { return e.String() }

// LogValue implements slog.LogValuer without the body.
func (e Entry) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("status", e.Status), slog.Int("bytes", len(e.Body)))
}

// Result is what a fetch got: the vault's answer, read whole (or the
// proxy's own answer when it could not ask the vault), and, when the vault
// could not answer, the diagnosis code a STALE answer carries
// (upstream-unavailable, token-unavailable, …). The cache keeps Body (a
// copy, for a 200 it stores) and hands it to every coalesced caller: the
// fetch must not reuse it (copy it out of pooled buffers).
type Result struct {
	Status    int
	Header    []Field // every header the proxy would pass on; a stored entry keeps only [KeepHeader]'s
	Body      []byte
	Diagnosis string
	Attempts  Attempts
}

// Attempts says how a fetch came to its answer when the proxy sent the
// request more than once (its retries of a 429 or 503), for the diagnosis
// of an answer passed on: how many more times it was sent, and the status
// of the first answer. The cache hands it to the callers of that fetch and
// keeps it in no stored entry.
type Attempts struct{ Retries, FirstStatus int }

func (r Result) String() string {
	return fmt.Sprintf("secretcache.Result{Status: %d, Body: %d bytes, Diagnosis: %q}", r.Status, len(r.Body), r.Diagnosis)
}

// GoString is String, for %#v.
func (r Result) GoString() string { return r.String() }

// LogValue implements slog.LogValuer without the body.
func (r Result) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("status", r.Status), slog.Int("bytes", len(r.Body)), slog.String("diagnosis", r.Diagnosis))
}

// Answer is what [Cache.Get] hands back: on [Hit] and [Stale] the stored
// entry (only its allowlisted headers); on [Miss], [Coalesced], [Bypass]
// and [Off] the fetch's Result as it came (any status, every header).
type Answer struct {
	Entry
	Outcome Outcome
	// Age is the time since the vault answered, on Hit and Stale; the Age
	// header is its whole seconds.
	Age time.Duration
	// Diagnosis is the code of the failure that made a Stale answer stale,
	// for X-Kvproxy-Diagnosis.
	Diagnosis string
	// Background is true when the fetch this Get passed may run, or still
	// be running, after Get returned (a refresh ahead, a retry of a failing
	// key, or a fetch the caller stopped waiting for): whatever it reads
	// of the caller's request must be taken before the caller moves on.
	Background bool
}

func (a Answer) String() string {
	return fmt.Sprintf("secretcache.Answer{%s, Outcome: %s, Age: %s, Diagnosis: %q}", a.Entry, a.Outcome, a.Age, a.Diagnosis)
}

// GoString is String, for %#v.
func (a Answer) GoString() string { return a.String() }

// LogValue implements slog.LogValuer without the body.
func (a Answer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("cache", a.Outcome.String()), slog.Int("status", a.Status), slog.Int("bytes", len(a.Body)))
}

// Outcome is how the cache answered a read.
type Outcome uint8

// The outcomes. String gives the metric label and the log word, Header the
// X-Cache value.
const (
	Off       Outcome = iota // the cache is off (a nil *Cache): no X-Cache header
	Hit                      // fresh from memory
	Miss                     // this read asked the vault
	Coalesced                // this read waited for another read's request to the vault (X-Cache: MISS)
	Stale                    // the vault could not answer; an entry past its TTL was served
	Bypass                   // Cache-Control: no-cache or no-store: the vault was asked
)

var outcomeNames = [...]string{"off", "hit", "miss", "coalesced", "stale", "bypass"}
var outcomeHeaders = [...]string{"", "HIT", "MISS", "MISS", "STALE", "BYPASS"}

// String is the lower-case name: off, hit, miss, coalesced, stale, bypass.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Header is the value of X-Cache, "" for Off.
func (o Outcome) Header() string {
	if int(o) < len(outcomeHeaders) {
		return outcomeHeaders[o]
	}
	return ""
}

// Class is what the cache does with a fetch's answer; see [Classify].
type Class uint8

const (
	// Pass: handed back; the cache is left as it was (400, 401, 409, …).
	Pass Class = iota
	// Store: a 200, kept (unless too large, compressed or already expired).
	Store
	// Refused: 403 or 404: every entry of the name is dropped at once and
	// nothing fetched before is stored: the vault has refused the item, so
	// it is not served again, fresh or stale, until a later 200 is stored.
	Refused
	// Transient: the vault could not answer (429 or 5xx after the proxy's
	// retries, an unreachable vault, a timeout, no token): a stale entry may
	// be served instead.
	Transient
)

// Classify is the class of an answer with status, or of a fetch that
// returned an error (always Transient). A 401 that survives the proxy's
// token renewal means the vault rejects kvproxy's identity, not that it
// cannot answer, so it is passed on and never covered by a stale entry.
func Classify(status int, err error) Class {
	switch {
	case err != nil:
		return Transient
	case status == 200:
		return Store
	case status == 403 || status == 404:
		return Refused
	case status == 429 || status >= 500 && status <= 599:
		return Transient
	default:
		return Pass
	}
}

// ExpiresAt reads attributes.exp (unix seconds) from a Key Vault item's
// JSON body (a SecretBundle, KeyBundle or CertificateBundle). ok is false
// when the body is not a JSON object or has no usable exp.
func ExpiresAt(body []byte) (exp time.Time, ok bool) {
	var b struct {
		Attributes struct {
			Exp json.RawMessage `json:"exp"`
		} `json:"attributes"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Attributes.Exp) == 0 {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(b.Attributes.Exp), 64)
	// Beyond year 9999 or before 1970 is no expiry kvproxy can act on.
	if err != nil || math.IsNaN(f) || f < 0 || f > 253402300799 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}
