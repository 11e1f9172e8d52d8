package images_test

import (
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

// lookupCounter counts the lookups a Registry reports.
type lookupCounter struct {
	mu sync.Mutex
	n  map[images.LookupKind]map[images.LookupResult]int
}

func (c *lookupCounter) ObserveLookup(k images.LookupKind, r images.LookupResult, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[images.LookupKind]map[images.LookupResult]int{}
	}
	if c.n[k] == nil {
		c.n[k] = map[images.LookupResult]int{}
	}
	c.n[k][r]++
}

// manifests returns the count of manifest lookups with result r.
func (c *lookupCounter) manifests(r images.LookupResult) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[images.KindManifest][r]
}

// TestTagTTL: a tag's resolution is reused for TagTTL without contacting
// the registry, also after the tag moved (the documented staleness), and
// resolved again after it expires; 0 disables the cache.
func TestTagTTL(t *testing.T) {
	reg := imagestest.Serve(t)
	build := func(entry string) v1.Image {
		return imagestest.Build(t, imagestest.Spec{Config: v1.Config{Entrypoint: []string{entry}}, Files: map[string]string{"app": entry}})
	}
	first := imagestest.Push(t, reg.Host, "acme/app:1", build("/first"))
	newSource := func(ttl time.Duration, obs images.Observer) *images.Registry {
		return images.NewRegistry(images.RegistryConfig{
			Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: reg.Host, Insecure: true}}},
			SkipOrigin: []string{"registry.example"},
			TagTTL:     ttl,
			Observer:   obs,
		})
	}
	const ttl = 400 * time.Millisecond
	obs := &lookupCounter{}
	src := newSource(ttl, obs)
	resolve := func(s *images.Registry) *images.Image {
		t.Helper()
		img, err := s.Resolve(t.Context(), "registry.example/acme/app:1", nil)
		require.NoError(t, err)
		return img
	}
	start := time.Now()
	got := resolve(src)
	require.Equal(t, first, got.Digest)
	reg.ResetCounter()
	again := resolve(src)
	assert.Equal(t, got, again)
	assert.Zero(t, reg.BytesServed(), "within the TTL the registry is not asked")
	assert.Equal(t, 1, obs.manifests(images.ResultHit))

	moved := imagestest.Push(t, reg.Host, "acme/app:1", build("/second"))
	require.NotEqual(t, first, moved)
	if time.Since(start) < ttl/2 {
		assert.Equal(t, first, resolve(src).Digest, "a moved tag keeps its digest until the entry expires")
	}
	time.Sleep(time.Until(start.Add(ttl + 50*time.Millisecond)))
	assert.Equal(t, moved, resolve(src).Digest, "resolved again after the TTL")
	assert.Equal(t, []string{"/second"}, resolve(src).Config.Entrypoint)

	off := newSource(0, nil)
	resolve(off)
	reg.ResetCounter()
	resolve(off)
	assert.Positive(t, reg.BytesServed(), "TTL 0: every lookup asks the registry")
}

// TestTagTTLSingleFlight: concurrent lookups of one tag share one fetch.
func TestTagTTLSingleFlight(t *testing.T) {
	reg := imagestest.Serve(t)
	imagestest.Push(t, reg.Host, "acme/app:2", imagestest.Build(t, imagestest.Spec{Config: v1.Config{Entrypoint: []string{"/app"}}}))
	obs := &lookupCounter{}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: reg.Host, Insecure: true}}},
		SkipOrigin: []string{"registry.example"},
		TagTTL:     time.Minute,
		Observer:   obs,
	})
	var wg sync.WaitGroup
	digests := make([]string, 8)
	for i := range digests {
		wg.Go(func() {
			img, err := src.Resolve(t.Context(), "registry.example/acme/app:2", nil)
			if assert.NoError(t, err) {
				digests[i] = img.Digest
			}
		})
	}
	wg.Wait()
	for _, d := range digests {
		assert.Equal(t, digests[0], d)
	}
	assert.Equal(t, 1, obs.manifests(images.ResultMiss), "one fetch")
	assert.Equal(t, 7, obs.manifests(images.ResultHit)+obs.manifests(images.ResultShared))
}
