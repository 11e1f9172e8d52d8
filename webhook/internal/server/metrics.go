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
	policyCache       *prometheus.CounterVec
	policyEvictions   prometheus.Counter
	policyEntries     prometheus.Gauge
	policyBytes       prometheus.Gauge
	patchCache        *prometheus.CounterVec
	patchEvictions    prometheus.Counter
	patchEntries      prometheus.Gauge
	patchBytes        prometheus.Gauge

	// children bound once in NewMetrics, used on the hot paths
	imageHit, imageMiss             prometheus.Counter
	imageResolveOK, imageResolveErr prometheus.Observer
	lookups                         map[images.LookupKind]lookupSeries
	policyLookups                   map[policy.CacheEvent]prometheus.Counter
	patchHit, patchMiss             prometheus.Counter
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
		policyCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_policy_cache_requests_total",
			Help: "Policy generations by result: served from the policy cache (hit), generated (miss), or waited for a concurrent generation of the same key (shared).",
		}, []string{"result"}),
		policyEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "contrast_webhook_policy_cache_evictions_total",
			Help: "Policies dropped from the policy cache to stay within its entry and byte bounds (least recently used first).",
		}),
		policyEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_webhook_policy_cache_entries",
			Help: "Policies in the policy cache.",
		}),
		policyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_webhook_policy_cache_bytes",
			Help: "Size of the policies in the policy cache as bounded by --policy-cache-max-bytes (texts, annotations and an estimate of the policy data).",
		}),
		patchCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_webhook_patch_cache_requests_total",
			Help: "JSON patches of mutated pods by result: served from the patch cache (hit) or derived from the difference between the admitted and the mutated pod (miss).",
		}, []string{"result"}),
		patchEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "contrast_webhook_patch_cache_evictions_total",
			Help: "JSON patches dropped from the patch cache to stay within its entry and byte bounds (least recently used first).",
		}),
		patchEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_webhook_patch_cache_entries",
			Help: "JSON patches in the patch cache.",
		}),
		patchBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_webhook_patch_cache_bytes",
			Help: "Size of the JSON patches in the patch cache as bounded by --patch-cache-max-bytes (their length and 256 bytes per entry).",
		}),
	}
	reg.MustRegister(m.admissions, m.latency, m.validations, m.validationLatency, m.statefulSets, m.imageCache, m.imageResolution, m.registryCache, m.registryFetch,
		m.policyCache, m.policyEvictions, m.policyEntries, m.policyBytes, m.patchCache, m.patchEvictions, m.patchEntries, m.patchBytes)
	m.patchHit = m.patchCache.WithLabelValues(string(PatchCacheHit))
	m.patchMiss = m.patchCache.WithLabelValues(string(PatchCacheMiss))
	m.policyLookups = map[policy.CacheEvent]prometheus.Counter{}
	for _, e := range []policy.CacheEvent{policy.CacheHit, policy.CacheMiss, policy.CacheShared} {
		m.policyLookups[e] = m.policyCache.WithLabelValues(string(e))
	}
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
	if event == policy.CacheEvict {
		m.policyEvictions.Inc()
	} else if c, ok := m.policyLookups[event]; ok {
		c.Inc()
	}
	m.policyEntries.Set(float64(entries))
	m.policyBytes.Set(float64(bytes))
}

// ObservePatchCache implements PatchCacheObserver.
func (m *Metrics) ObservePatchCache(event PatchCacheEvent, entries int, bytes int64) {
	switch event {
	case PatchCacheHit:
		m.patchHit.Inc()
	case PatchCacheMiss:
		m.patchMiss.Inc()
	case PatchCacheEvict:
		m.patchEvictions.Inc()
	}
	m.patchEntries.Set(float64(entries))
	m.patchBytes.Set(float64(bytes))
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
