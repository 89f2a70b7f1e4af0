package metrics

import "github.com/prometheus/client_golang/prometheus"

// Cache read results, the values of kvproxy_cache_requests_total{result}.
// They are secretcache's outcome names.
const (
	CacheHit       = "hit"
	CacheMiss      = "miss"
	CacheStale     = "stale"
	CacheBypass    = "bypass"
	CacheCoalesced = "coalesced" // waited for another read's request to the vault
)

// CacheResults lists the cache read results.
var CacheResults = []string{CacheHit, CacheMiss, CacheStale, CacheBypass, CacheCoalesced}

// CacheNames lists the secret cache's metric names, in the order of the
// README's metrics table.
func CacheNames() []string {
	return []string{
		"kvproxy_cache_requests_total",
		"kvproxy_cache_entries",
		"kvproxy_cache_bytes",
		"kvproxy_cache_evictions_total",
	}
}

// CacheMetrics holds the secret cache's collectors. It implements
// secretcache.Observer; like every method here, its methods do nothing on
// a nil *CacheMetrics.
type CacheMetrics struct {
	Requests  *prometheus.CounterVec
	Entries   prometheus.Gauge
	Bytes     prometheus.Gauge
	Evictions prometheus.Counter

	results map[string]prometheus.Counter // the Requests child of each result, resolved once
}

// NewCacheMetrics creates the cache's collectors, registers them on reg and
// starts every result's series at zero. It panics if they are already
// registered there, which is a programming error.
func NewCacheMetrics(reg prometheus.Registerer) *CacheMetrics {
	m := &CacheMetrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_cache_requests_total",
			Help: "Cacheable reads, by how the cache answered (hit, miss, stale, bypass, coalesced).",
		}, []string{"result"}),
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_cache_entries",
			Help: "Vault answers held in the cache.",
		}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_cache_bytes",
			Help: "Body bytes held in the cache (bounded by KVPROXY_CACHE_MAX_BYTES).",
		}),
		Evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvproxy_cache_evictions_total",
			Help: "Entries dropped to stay within KVPROXY_CACHE_MAX_BYTES.",
		}),
		results: map[string]prometheus.Counter{},
	}
	for _, r := range CacheResults {
		m.results[r] = m.Requests.WithLabelValues(r)
	}
	reg.MustRegister(m.Requests, m.Entries, m.Bytes, m.Evictions)
	return m
}

// ObserveResult counts one cacheable read; a result not in [CacheResults]
// is ignored, so the label stays bounded. It does not allocate.
func (m *CacheMetrics) ObserveResult(result string) {
	if m == nil {
		return
	}
	if c, ok := m.results[result]; ok {
		c.Inc()
	}
}

// ObserveEviction counts one entry dropped for memory.
func (m *CacheMetrics) ObserveEviction() {
	if m == nil {
		return
	}
	m.Evictions.Inc()
}

// ObserveSize sets the entries held and their body bytes.
func (m *CacheMetrics) ObserveSize(entries int, bytes int64) {
	if m == nil {
		return
	}
	m.Entries.Set(float64(entries))
	m.Bytes.Set(float64(bytes))
}
