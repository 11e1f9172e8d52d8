package inject

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
)

// Markers an internal service puts in its answers; no denial may contain
// them.
const (
	internalBody   = "internal-body-c0ffee-root:x:0:0"
	internalHeader = "internal-header-8d1e"
)

// registryMutator is a Mutator whose registry serves imgs through mirrors,
// like testMutator's, and reaches the hosts in insecure over plain HTTP.
func registryMutator(t *testing.T, imgs *injecttest.Images, insecure ...string) *Mutator {
	t.Helper()
	mirror := []images.Mirror{{Host: imgs.Registry.Host, Insecure: true}}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
		Insecure:   insecure,
	})
	cfg := Config{
		InitializerImage: imgs.InitializerImage, ProxyImage: imgs.ProxyImage, CoordinatorAddress: "coordinator:7777",
		Platform: attest.PlatformSNP, CoordinatorPolicyHashes: [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	require.NoError(t, cfg.Validate())
	return &Mutator{Config: cfg, Images: src}
}

// TestImageDenialsDoNotReflectResponses: a pod naming an internal service
// as its registry is denied without any of the service's answer in the
// message.
func TestImageDenialsDoNotReflectResponses(t *testing.T) {
	imgs := injecttest.Serve(t)
	for _, status := range []int{http.StatusNotFound, http.StatusInternalServerError, http.StatusUnauthorized} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel() // 5xx answers are retried with backoff
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Internal", internalHeader)
				w.Header().Set("WWW-Authenticate", `Basic realm="`+internalHeader+`"`)
				if r.URL.Path == "/v2/" {
					return
				}
				w.WriteHeader(status)
				_, _ = io.WriteString(w, strings.Repeat(internalBody+"\n", 64))
			}))
			t.Cleanup(srv.Close)
			host := strings.TrimPrefix(srv.URL, "http://")
			m := registryMutator(t, imgs, host)

			pod := basePod()
			image := host + "/admin/config:latest"
			pod.Spec.Containers[1].Image = image
			_, _, err := m.MutatePod(t.Context(), pod, nil)
			require.ErrorIs(t, err, ErrDenied)
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, DenyImage, de.Code)
			assert.Equal(t, "spec.containers[1].image", de.Field)
			msg := err.Error()
			assert.Contains(t, msg, `"`+image+`"`)
			assert.Contains(t, msg, "spec.containers[1].image")
			assert.NotContains(t, msg, "internal-")
			assert.NotContains(t, msg, "X-Internal")
		})
	}
}

// TestImageOnLoopbackNotFetchedOverHTTP: a pod naming a registry on
// 127.0.0.1 that is not configured insecure is denied without a single
// plain-HTTP request to it.
func TestImageOnLoopbackNotFetchedOverHTTP(t *testing.T) {
	var requests atomic.Int64
	imgs := injecttest.Serve(t)
	reg := imgs.Registry
	imagestest.Push(t, reg.Host, "acme/app:1", imagestest.Build(t, imagestest.Catalog["acme/agent:2"]))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Redirect(w, r, "http://"+reg.Host+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	pod := basePod()
	pod.Spec.Containers[0].Image = host + "/acme/app:1"
	_, _, err := registryMutator(t, imgs).MutatePod(t.Context(), pod, nil)
	require.ErrorIs(t, err, ErrDenied)
	require.ErrorIs(t, err, images.ErrUnreachable)
	assert.Contains(t, err.Error(), "spec.containers[0].image")
	assert.Zero(t, requests.Load(), "the webhook talked plain HTTP to a registry not configured insecure")

	// configured insecure: resolved
	_, _, err = registryMutator(t, imgs, host, reg.Host).MutatePod(t.Context(), pod, nil)
	require.NoError(t, err)
	assert.Positive(t, requests.Load())
}

// leakySource fails like a Source that passes a registry's answer on.
type leakySource struct{ images.Source }

func (leakySource) Resolve(context.Context, string, authn.Keychain) (*images.Image, error) {
	return nil, errors.New("GET http://10.0.0.1/v2/: unexpected status code 500: " + internalBody)
}

// TestImageDenialWithholdsOtherErrors: only an *images.Error, whose text is
// classified, is quoted in a denial.
func TestImageDenialWithholdsOtherErrors(t *testing.T) {
	m := &Mutator{Config: testConfig, Images: leakySource{}}
	_, _, err := m.MutatePod(t.Context(), basePod(), nil)
	require.ErrorIs(t, err, ErrDenied)
	assert.NotContains(t, err.Error(), "internal-")
	assert.Contains(t, err.Error(), "cannot be resolved")
}
