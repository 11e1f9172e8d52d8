package server

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

// registrySeries returns the label sets (kind/result) of the registry
// metrics and the histogram sample count and sum of each fetch series.
func registrySeries(t *testing.T, g prometheus.Gatherer) map[string][2]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string][2]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "contrast_webhook_registry_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			require.Len(t, labels, 2, "labels of %s", mf.GetName())
			key := mf.GetName() + "{" + labels["kind"] + "," + labels["result"] + "}"
			if h := m.GetHistogram(); h != nil {
				out[key] = [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
			} else {
				out[key] = [2]float64{m.GetCounter().GetValue()}
			}
		}
	}
	return out
}

// fetches returns the sample count and sum of
// contrast_webhook_registry_fetch_duration_seconds{kind,result}.
func fetches(t *testing.T, g prometheus.Gatherer, kind, result string) (uint64, float64) {
	t.Helper()
	v, ok := registrySeries(t, g)["contrast_webhook_registry_fetch_duration_seconds{"+kind+","+result+"}"]
	require.True(t, ok, "no fetch series kind=%s result=%s", kind, result)
	return uint64(v[0]), v[1]
}

// TestRegistryMetrics wires an in-process registry to the metrics as the
// webhook command does, behind the webhook's own cache.
func TestRegistryMetrics(t *testing.T) {
	reg := imagestest.Serve(t)
	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/app"}},
		Files:  map[string]string{"etc/passwd": "app:x:1001:1001::/:/bin/sh\n"},
	})
	digest := imagestest.Push(t, reg.Host, "acme/app:1", img)
	promReg := prometheus.NewPedanticRegistry()
	m := NewMetrics(promReg)
	registry := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: reg.Host, Insecure: true}}},
		SkipOrigin: []string{"registry.example"},
		Observer:   m,
	})
	src := NewCachingSource(registry, m)
	cache := func(kind, result string) float64 {
		return testutil.ToFloat64(m.registryCache.WithLabelValues(kind, result))
	}

	// every series exists before the first lookup; names and help pass lint
	assert.Len(t, registrySeries(t, promReg), len(wantRegistrySeries))
	problems, err := testutil.GatherAndLint(promReg)
	require.NoError(t, err)
	assert.Empty(t, problems)

	// a tag: both layers miss, the registry fetches manifest and config
	got, err := src.Resolve(t.Context(), "registry.example/acme/app:1", nil)
	require.NoError(t, err)
	assert.InDelta(t, 1, cache("manifest", "miss"), 0)
	assert.InDelta(t, 1, cache("config", "miss"), 0)
	n, sum := fetches(t, promReg, "manifest", "ok")
	assert.Equal(t, uint64(1), n)
	assert.Positive(t, sum)
	n, _ = fetches(t, promReg, "config", "ok")
	assert.Equal(t, uint64(1), n)

	// the pinned reference with credentials skips the webhook's cache; the
	// registry's cache is scoped by credentials, so the first lookup with
	// them fetches and the second is a hit
	pinned := "registry.example/acme/app@" + digest
	kc := authn.NewMultiKeychain() // anonymous, but not nil
	_, err = src.Resolve(t.Context(), pinned, kc)
	require.NoError(t, err)
	assert.InDelta(t, 2, cache("manifest", "miss"), 0)
	_, err = src.Resolve(t.Context(), pinned, kc)
	require.NoError(t, err)
	assert.InDelta(t, 1, cache("manifest", "hit"), 0)
	assert.InDelta(t, 1, cache("config", "hit"), 0)
	n, _ = fetches(t, promReg, "manifest", "ok")
	assert.Equal(t, uint64(2), n, "a hit is not a fetch")

	// without credentials: a miss of the webhook's cache and a hit of the
	// registry's; then a hit of the webhook's cache that never reaches it
	_, err = src.Resolve(t.Context(), pinned, nil)
	require.NoError(t, err)
	_, err = src.Resolve(t.Context(), pinned, nil)
	require.NoError(t, err)
	assert.InDelta(t, 1, testutil.ToFloat64(m.imageCache.WithLabelValues("hit")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.imageCache.WithLabelValues("miss")), 0)
	assert.InDelta(t, 2, cache("manifest", "hit"), 0)

	// accounts: fetched once, then cached
	for range 2 {
		_, err = src.Accounts(t.Context(), got, nil)
		require.NoError(t, err)
	}
	assert.InDelta(t, 1, cache("accounts", "miss"), 0)
	assert.InDelta(t, 1, cache("accounts", "hit"), 0)
	n, _ = fetches(t, promReg, "accounts", "ok")
	assert.Equal(t, uint64(1), n)

	// a missing image is a miss whose fetch failed
	_, err = src.Resolve(t.Context(), "registry.example/acme/missing:1", nil)
	require.Error(t, err)
	assert.InDelta(t, 3, cache("manifest", "miss"), 0)
	n, _ = fetches(t, promReg, "manifest", "error")
	assert.Equal(t, uint64(1), n)

	// the label sets are exactly kinds × results, no image names
	var keys []string
	for k := range registrySeries(t, promReg) {
		keys = append(keys, k)
	}
	assert.ElementsMatch(t, wantRegistrySeries, keys)
}

var wantRegistrySeries = []string{
	"contrast_webhook_registry_cache_requests_total{manifest,hit}",
	"contrast_webhook_registry_cache_requests_total{manifest,miss}",
	"contrast_webhook_registry_cache_requests_total{manifest,shared}",
	"contrast_webhook_registry_cache_requests_total{config,hit}",
	"contrast_webhook_registry_cache_requests_total{config,miss}",
	"contrast_webhook_registry_cache_requests_total{accounts,hit}",
	"contrast_webhook_registry_cache_requests_total{accounts,miss}",
	"contrast_webhook_registry_fetch_duration_seconds{manifest,ok}",
	"contrast_webhook_registry_fetch_duration_seconds{manifest,error}",
	"contrast_webhook_registry_fetch_duration_seconds{config,ok}",
	"contrast_webhook_registry_fetch_duration_seconds{config,error}",
	"contrast_webhook_registry_fetch_duration_seconds{accounts,ok}",
	"contrast_webhook_registry_fetch_duration_seconds{accounts,error}",
}

// TestObserveLookupBoundedLabels checks that values outside the documented
// sets are dropped rather than becoming new series.
func TestObserveLookupBoundedLabels(t *testing.T) {
	promReg := prometheus.NewPedanticRegistry()
	m := NewMetrics(promReg)
	m.ObserveLookup("layers", images.ResultMiss, time.Second)
	m.ObserveLookup(images.KindConfig, "stale", time.Second)
	m.ObserveLookup(images.KindConfig, images.ResultShared, time.Second) // only tags (manifests) are shared
	series := registrySeries(t, promReg)
	var keys []string
	for k, v := range series {
		keys = append(keys, k)
		assert.Zero(t, v[0], k)
	}
	assert.ElementsMatch(t, wantRegistrySeries, keys)
}
