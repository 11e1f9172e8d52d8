package images_test

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

// Markers an internal service puts in its answers; no error and no log line
// may contain them.
const (
	bodyMarker   = "internal-body-7f3a9c-root:x:0:0"
	headerMarker = "internal-header-5be1d2"
)

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// internalService answers every request under /v2/<repo>/ with status and a
// distinctive body and header; /v2/ itself answers pingStatus.
func internalService(t *testing.T, pingStatus, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal", headerMarker)
		w.Header().Set("Content-Type", "text/plain; "+headerMarker)
		code := status
		if r.URL.Path == "/v2/" {
			code = pingStatus
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, strings.Repeat(bodyMarker+"\n", 16))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestRegistryErrorsDoNotReflectResponses: a registry named in a pod may be
// an internal service; its answer must not come back to the pod's author.
// The error is classified, names the image as written, and neither it nor
// the debug log quote the body or headers.
func TestRegistryErrorsDoNotReflectResponses(t *testing.T) {
	testCases := map[string]struct {
		ping, status int
		wantClass    error
		wantMsg      string
	}{
		"404":         {ping: http.StatusOK, status: http.StatusNotFound, wantClass: images.ErrNotFound, wantMsg: "not found"},
		"401":         {ping: http.StatusOK, status: http.StatusUnauthorized, wantClass: images.ErrAccessDenied, wantMsg: "HTTP 401 Unauthorized"},
		"403":         {ping: http.StatusOK, status: http.StatusForbidden, wantClass: images.ErrAccessDenied, wantMsg: "HTTP 403 Forbidden"},
		"500":         {ping: http.StatusOK, status: http.StatusInternalServerError, wantClass: images.ErrRegistryStatus, wantMsg: "HTTP 500 Internal Server Error"},
		"418 on ping": {ping: http.StatusTeapot, status: http.StatusOK, wantClass: images.ErrRegistryStatus, wantMsg: "HTTP 418"},
		"200 garbage": {ping: http.StatusOK, status: http.StatusOK, wantClass: images.ErrInvalidImage, wantMsg: "no valid image"},
	}
	for name, tc := range testCases {
		host := internalService(t, tc.ping, tc.status)
		for via, image := range map[string]string{
			"host as written": host + "/internal/admin:latest", // configured insecure
			"mirror":          "registry.example/internal/admin:latest",
		} {
			t.Run(name+"/"+via, func(t *testing.T) {
				t.Parallel() // 5xx answers are retried with backoff
				var logs syncBuffer
				src := images.NewRegistry(images.RegistryConfig{
					Insecure:   []string{host},
					Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: host, Insecure: true}}},
					SkipOrigin: []string{"registry.example"},
					Logger:     slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				})
				_, err := src.Resolve(t.Context(), image, nil)
				require.Error(t, err)
				require.ErrorIs(t, err, tc.wantClass)
				var ierr *images.Error
				require.ErrorAs(t, err, &ierr)
				assert.Equal(t, image, ierr.Image)
				msg := err.Error()
				assert.Contains(t, msg, `"`+image+`"`)
				assert.Contains(t, msg, tc.wantMsg)
				assert.NotContains(t, msg, "internal-")
				assert.NotContains(t, msg, "text/plain")
				if via == "mirror" {
					assert.NotContains(t, msg, host, "mirror hosts are configuration, not the pod's")
				}

				_, err = src.Accounts(t.Context(), &images.Image{Repository: strings.TrimSuffix(image, ":latest"), Digest: "sha256:" + strings.Repeat("0", 64)}, nil)
				require.ErrorIs(t, err, tc.wantClass)
				assert.NotContains(t, err.Error(), "internal-")

				out := logs.String()
				assert.Contains(t, out, "registry request failed")
				assert.NotContains(t, out, "internal-body")
				assert.NotContains(t, out, headerMarker)
			})
		}
	}
}

// countingRegistry is an in-process registry over plain HTTP that counts the
// requests it gets.
func countingRegistry(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	imagestest.Push(t, host, "acme/app:1", imagestest.Build(t, imagestest.Spec{Config: v1.Config{Entrypoint: []string{"/app"}}}))
	n.Store(0)
	return host, &n
}

// TestRegistryHTTPSOnly: go-containerregistry talks plain HTTP to hosts
// that look local or private; the Registry does so only for mirrors marked
// Insecure and registries in RegistryConfig.Insecure.
func TestRegistryHTTPSOnly(t *testing.T) {
	host, requests := countingRegistry(t)
	port := host[strings.LastIndex(host, ":"):]

	for name, tc := range map[string]struct {
		image string
		cfg   images.RegistryConfig
	}{
		"loopback host in the pod":  {image: host + "/acme/app:1"},
		"localhost in the pod":      {image: "localhost" + port + "/acme/app:1"},
		"insecure other registry":   {image: host + "/acme/app:1", cfg: images.RegistryConfig{Insecure: []string{"10.0.0.1:5000"}}},
		"mirror without Insecure":   {image: "registry.example/acme/app:1", cfg: images.RegistryConfig{Mirrors: map[string][]images.Mirror{"registry.example": {{Host: host}}}, SkipOrigin: []string{"registry.example"}}},
		"insecure mirror elsewhere": {image: host + "/acme/app:1", cfg: images.RegistryConfig{Mirrors: map[string][]images.Mirror{"registry.example": {{Host: "10.0.0.1:5000", Insecure: true}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			src := images.NewRegistry(tc.cfg)
			_, err := src.Resolve(t.Context(), tc.image, nil)
			require.ErrorIs(t, err, images.ErrUnreachable)
			assert.Contains(t, err.Error(), "cannot be reached")
			assert.Zero(t, requests.Load(), "a plain-HTTP request reached the registry")
		})
	}

	t.Run("configured insecure", func(t *testing.T) {
		for _, cfg := range []images.RegistryConfig{
			{Insecure: []string{host}},
			{Mirrors: map[string][]images.Mirror{"registry.example": {{Host: host, Insecure: true}}}},
		} {
			src := images.NewRegistry(cfg)
			image := host + "/acme/app:1"
			if len(cfg.Mirrors) > 0 {
				image = "registry.example/acme/app:1"
			}
			_, err := src.Resolve(t.Context(), image, nil)
			require.NoError(t, err, image)
		}
		assert.Positive(t, requests.Load())
	})
}

// TestRegistryNoRedirectToPlainHTTP: an HTTPS registry cannot send the
// webhook to a plain-HTTP URL.
func TestRegistryNoRedirectToPlainHTTP(t *testing.T) {
	plainHost, requests := countingRegistry(t)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, "http://"+plainHost+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(tlsSrv.Close)
	tlsHost := strings.TrimPrefix(tlsSrv.URL, "https://")

	src := images.NewRegistry(images.RegistryConfig{Transport: tlsSrv.Client().Transport})
	_, err := src.Resolve(t.Context(), tlsHost+"/acme/app:1", nil)
	require.ErrorIs(t, err, images.ErrUnreachable)
	assert.Zero(t, requests.Load())
}
