// Package secretcache keeps Key Vault's answers to single-item reads in
// memory, so a pod's repeated reads cost the vault almost nothing and
// survive a vault or identity outage, without ever serving an item the
// vault has since refused.
//
// It knows nothing of HTTP engines: the proxy decides with [Cacheable]
// whether a request may be cached, computes its [Key], and calls
// [Cache.Get] with a [Fetch] that makes the upstream request and reads its
// answer whole into a [Result]. Get answers from memory ([Hit]), asks the
// vault once for every concurrent reader of a key ([Miss], [Coalesced]),
// refreshes entries ahead of their TTL in the background, and, when the
// vault cannot answer ([Transient], see [Classify]), serves an entry up to
// StaleIfError past its TTL ([Stale]) with the failure's diagnosis. A 403
// or 404 drops every entry of the item's name; [Cache.Invalidate] does the
// same after a write through the proxy ([Invalidates]). An entry past the
// item's attributes.exp is never served.
//
// # Values
//
// Bodies live only in memory. Nothing in this package logs; [Entry],
// [Result] and [Answer] print and log their status and size, never their
// body. Bodies are bounded by Options.MaxBytes (least recently used entries
// go first) and one body by MaxBytes/[MaxEntryFraction].
//
// # Why not a cache library
//
// github.com/maypok86/otter/v2 (weighted S3-FIFO, loader de-duplication,
// refresh-after-write) was considered. What this cache must get right lies
// beside what otter offers: dropping every key of a name and making sure a
// fetch already in flight neither stores nor hands out what it read before
// the drop; serving an entry past its TTL only when the vault cannot
// answer, and at once while it keeps failing; never serving past
// attributes.exp; and a shared fetch no single reader can cancel. Each
// would need a name index, generations and per-entry state kept outside
// otter, in step with its own expiry and eviction. What remains, a
// byte-weighted LRU over a few hundred secrets, is a container/list and a
// map under one mutex. So it is written here, with no dependency beyond
// golang.org/x/sync/singleflight (already used by auth).
package secretcache
