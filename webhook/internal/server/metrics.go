package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Admission results (label result of contrast_webhook_admissions_total).
const (
	ResultMutated = "mutated"
	ResultSkipped = "skipped"
	ResultDenied  = "denied"
	ResultError   = "error"
)

// Metrics are the webhook's Prometheus metrics (docs/metrics.md). They are
// also the images.Observer of the webhook's images.Registry.
type Metrics struct {
	admissions        *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	validations       *prometheus.CounterVec
	statefulSets      *prometheus.CounterVec
	validationLatency *prometheus.HistogramVec
	imageCache        *prometheus.CounterVec
	imageResolution   *prometheus.HistogramVec
	registryCache     *prometheus.CounterVec
	registryFetch     *prometheus.HistogramVec
	policyCache       cacheSeries
	patchCache        cacheSeries

	// children bound once in NewMetrics, used on the hot paths
	imageHit, imageMiss             prometheus.Counter
	imageResolveOK, imageResolveErr prometheus.Observer
	lookups                         map[images.LookupKind]lookupSeries
	policyLookups                   map[policy.CacheEvent]prometheus.Counter
	patchLookups                    map[PatchCacheEvent]prometheus.Counter
}

// cacheSeries are the series of one bounded cache: requests by result,
// evictions, and its size in entries and bytes.
type cacheSeries struct {
	requests  *prometheus.CounterVec
	evictions prometheus.Counter
	entries   prometheus.Gauge
	bytes     prometheus.Gauge
}

// cacheHelp are the help texts of a cacheSeries.
type cacheHelp struct{ requests, evictions, entries, bytes string }

// newCacheSeries returns the series contrast_webhook_<name>_cache_{requests_total,evictions_total,entries,bytes}.
func newCacheSeries(name string, help cacheHelp) cacheSeries {
	prefix := "contrast_webhook_" + name + "_cache_"
	return cacheSeries{
		requests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: prefix + "requests_total", Help: help.requests}, []string{"result"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "evictions_total", Help: help.evictions}),
		entries:   prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "entries", Help: help.entries}),
		bytes:     prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "bytes", Help: help.bytes}),
	}
}

func (c cacheSeries) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.requests, c.evictions, c.entries, c.bytes}
}

// lookups binds the request series of results, which then exist from the
// start, at zero.
func lookups[E ~string](c cacheSeries, results ...E) map[E]prometheus.Counter {
	out := make(map[E]prometheus.Counter, len(results))
	for _, r := range results {
		out[r] = c.requests.WithLabelValues(string(r))
	}
	return out
}

// observe counts event (an eviction when evicted, else a request of the
// bound result event, unknown ones dropped) and sets the size gauges.
func observe[E comparable](c cacheSeries, requests map[E]prometheus.Counter, event E, evicted bool, entries int, bytes int64) {
	if evicted {
		c.evictions.Inc()
	} else if r, ok := requests[event]; ok {
		r.Inc()
	}
	c.entries.Set(float64(entries))
	c.bytes.Set(float64(bytes))
}

// lookupSeries are the registry series of one lookup kind.
type lookupSeries struct {
	hit, miss, shared prometheus.Counter
	fetchOK, fetchErr prometheus.Observer
}

var (
	_ images.Observer      = (*Metrics)(nil)
	_ policy.CacheObserver = (*Metrics)(nil)
	_ PatchCacheObserver   = (*Metrics)(nil)
)

var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics registers the webhook metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_admissions_total",
			Help: "Pod admissions by result (mutated, skipped, denied, error) and reason.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contrast_webhook_admission_duration_seconds",
			Help:    "Duration of pod admissions by result.",
			Buckets: durationBuckets,
		}, []string{"result"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_validations_total",
			Help: "Pod validations (the policy recomputed over the final pod) by result (allowed, skipped, denied, error) and reason.",
		}, []string{"result", "reason"}),
		validationLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contrast_webhook_validation_duration_seconds",
			Help:    "Duration of pod validations by result.",
			Buckets: durationBuckets,
		}, []string{"result"}),
		statefulSets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_statefulset_admissions_total",
			Help: "StatefulSet admissions (claim templates of encrypted volumes set to volumeMode Block) by result (mutated, skipped, error) and reason.",
		}, []string{"result", "reason"}),
		imageCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_image_cache_requests_total",
			Help: "Image resolutions of digest-pinned references served from the webhook's cache (hit) or resolved (miss).",
		}, []string{"result"}),
		imageResolution: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contrast_webhook_image_resolution_duration_seconds",
			Help:    "Duration of image resolutions that reached the image source, by result (ok, error).",
			Buckets: durationBuckets,
		}, []string{"result"}),
		registryCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_registry_cache_requests_total",
			Help: "Lookups of the image registry client by kind (manifest, config, accounts), served from its cache (hit), fetched from a registry (miss), or waiting for a concurrent fetch of the same tag (shared).",
		}, []string{"kind", "result"}),
		registryFetch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contrast_webhook_registry_fetch_duration_seconds",
			Help:    "Duration of the image registry client's fetches after a cache miss, by kind (manifest, config, accounts) and result (ok, error).",
			Buckets: durationBuckets,
		}, []string{"kind", "result"}),
		policyCache: newCacheSeries("policy", cacheHelp{
			requests:  "Policy generations by result: served from the policy cache (hit), generated (miss), or waited for a concurrent generation of the same key (shared).",
			evictions: "Policies dropped from the policy cache to stay within its entry and byte bounds (least recently used first).",
			entries:   "Policies in the policy cache.",
			bytes:     "Size of the policies in the policy cache as bounded by --policy-cache-max-bytes (texts, annotations and an estimate of the policy data).",
		}),
		patchCache: newCacheSeries("patch", cacheHelp{
			requests:  "JSON patches of mutated pods by result: served from the patch cache (hit) or derived from the difference between the admitted and the mutated pod (miss).",
			evictions: "JSON patches dropped from the patch cache to stay within its entry and byte bounds (least recently used first).",
			entries:   "JSON patches in the patch cache.",
			bytes:     "Size of the JSON patches in the patch cache as bounded by --patch-cache-max-bytes (their length and 256 bytes per entry).",
		}),
	}
	reg.MustRegister(m.admissions, m.latency, m.validations, m.validationLatency, m.statefulSets, m.imageCache, m.imageResolution, m.registryCache, m.registryFetch)
	reg.MustRegister(m.policyCache.collectors()...)
	reg.MustRegister(m.patchCache.collectors()...)
	m.policyLookups = lookups(m.policyCache, policy.CacheHit, policy.CacheMiss, policy.CacheShared)
	m.patchLookups = lookups(m.patchCache, PatchCacheHit, PatchCacheMiss)
	m.imageHit = m.imageCache.WithLabelValues("hit")
	m.imageMiss = m.imageCache.WithLabelValues("miss")
	m.imageResolveOK = m.imageResolution.WithLabelValues("ok")
	m.imageResolveErr = m.imageResolution.WithLabelValues("error")
	// every series of the registry metrics exists from the start, at zero
	m.lookups = make(map[images.LookupKind]lookupSeries, len(images.LookupKinds))
	for _, k := range images.LookupKinds {
		m.lookups[k] = lookupSeries{
			hit:      m.registryCache.WithLabelValues(string(k), "hit"),
			miss:     m.registryCache.WithLabelValues(string(k), "miss"),
			fetchOK:  m.registryFetch.WithLabelValues(string(k), "ok"),
			fetchErr: m.registryFetch.WithLabelValues(string(k), "error"),
		}
	}
	// only tag lookups (kind manifest) wait for a concurrent fetch
	manifest := m.lookups[images.KindManifest]
	manifest.shared = m.registryCache.WithLabelValues(string(images.KindManifest), "shared")
	m.lookups[images.KindManifest] = manifest
	return m
}

// ObserveLookup implements images.Observer: hits and misses are counted,
// and the duration of each miss is observed as a fetch (ok or error).
// Unknown kinds or results are dropped, so the label set stays bounded.
func (m *Metrics) ObserveLookup(kind images.LookupKind, result images.LookupResult, d time.Duration) {
	series, ok := m.lookups[kind]
	if !ok {
		return
	}
	switch result {
	case images.ResultHit:
		series.hit.Inc()
	case images.ResultMiss:
		series.miss.Inc()
		series.fetchOK.Observe(d.Seconds())
	case images.ResultError:
		series.miss.Inc()
		series.fetchErr.Observe(d.Seconds())
	case images.ResultShared:
		if series.shared != nil {
			series.shared.Inc()
		}
	}
}

// ObservePolicyCache implements policy.CacheObserver.
func (m *Metrics) ObservePolicyCache(event policy.CacheEvent, entries int, bytes int64) {
	observe(m.policyCache, m.policyLookups, event, event == policy.CacheEvict, entries, bytes)
}

// ObservePatchCache implements PatchCacheObserver.
func (m *Metrics) ObservePatchCache(event PatchCacheEvent, entries int, bytes int64) {
	observe(m.patchCache, m.patchLookups, event, event == PatchCacheEvict, entries, bytes)
}

func (m *Metrics) observeAdmission(result, reason string, d time.Duration) {
	m.admissions.WithLabelValues(result, reason).Inc()
	m.latency.WithLabelValues(result).Observe(d.Seconds())
}

func (m *Metrics) observeValidation(result, reason string, d time.Duration) {
	m.validations.WithLabelValues(result, reason).Inc()
	m.validationLatency.WithLabelValues(result).Observe(d.Seconds())
}

func (m *Metrics) observeStatefulSet(result, reason string) {
	m.statefulSets.WithLabelValues(result, reason).Inc()
}

// maxCachedImages bounds the webhook's cache of digest-pinned resolutions.
const maxCachedImages = 4096

// CachingSource is an images.Source that caches the resolution of
// digest-pinned references (they are immutable) made without credentials,
// and measures resolutions. Tags are always resolved again: they move.
// Resolutions with a keychain are not cached, so a pod without pull secrets
// never learns the configuration of a private image from the cache.
type CachingSource struct {
	next    images.Source
	metrics *Metrics

	mu    sync.Mutex
	cache map[string]*images.Image
}

// NewCachingSource wraps next.
func NewCachingSource(next images.Source, m *Metrics) *CachingSource {
	return &CachingSource{next: next, metrics: m, cache: map[string]*images.Image{}}
}

// Resolve implements images.Source.
func (s *CachingSource) Resolve(ctx context.Context, image string, kc authn.Keychain) (*images.Image, error) {
	cacheable := kc == nil && strings.Contains(image, "@sha256:")
	if cacheable {
		s.mu.Lock()
		img, ok := s.cache[image]
		s.mu.Unlock()
		if ok {
			s.metrics.imageHit.Inc()
			cp := *img
			return &cp, nil
		}
		s.metrics.imageMiss.Inc()
	}
	start := time.Now()
	img, err := s.next.Resolve(ctx, image, kc)
	if err != nil {
		s.metrics.imageResolveErr.Observe(time.Since(start).Seconds())
		return nil, err
	}
	s.metrics.imageResolveOK.Observe(time.Since(start).Seconds())
	if cacheable {
		s.mu.Lock()
		if len(s.cache) >= maxCachedImages {
			clear(s.cache)
		}
		cp := *img
		s.cache[image] = &cp
		s.mu.Unlock()
	}
	return img, nil
}

// Accounts implements images.Source.
func (s *CachingSource) Accounts(ctx context.Context, img *images.Image, kc authn.Keychain) (*images.Accounts, error) {
	return s.next.Accounts(ctx, img, kc)
}
