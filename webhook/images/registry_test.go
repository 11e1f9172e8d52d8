package images_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

func TestRegistryMirror(t *testing.T) {
	reg := imagestest.Serve(t)
	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/web"}, Env: []string{"PATH=/bin"}, WorkingDir: "/app", User: "1000"},
		Files:  map[string]string{"web": "binary"},
	})
	digest := imagestest.Push(t, reg.Host, "buoyantio/emojivoto-web:v11", img)

	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": {{Host: reg.Host, Insecure: true}}},
		SkipOrigin: []string{"docker.l5d.io"},
	})
	got, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)
	require.NoError(t, err)
	assert.Equal(t, "docker.l5d.io/buoyantio/emojivoto-web", got.Repository)
	assert.Equal(t, digest, got.Digest)
	assert.Equal(t, []string{"/web"}, got.Config.Entrypoint)
	assert.Equal(t, "/app", got.Config.WorkingDir)
	assert.Equal(t, "docker.l5d.io/buoyantio/emojivoto-web@"+digest, got.Reference())

	// digest references are served from the cache without network access
	reg.ResetCounter()
	again, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web@"+digest, nil)
	require.NoError(t, err)
	assert.Equal(t, got.Config, again.Config)
	assert.Zero(t, reg.BytesServed())

	// a tag+digest reference must match
	_, err = src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web:v11@"+digest, nil)
	require.NoError(t, err)
}

func TestRegistryErrors(t *testing.T) {
	reg := imagestest.Serve(t)
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": {{Host: reg.Host, Insecure: true}}},
		SkipOrigin: []string{"docker.l5d.io"},
	})
	_, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/missing:v1", nil)
	require.Error(t, err)
	var ierr *images.Error
	require.ErrorAs(t, err, &ierr)
	assert.Equal(t, "docker.l5d.io/buoyantio/missing:v1", ierr.Image)
	require.ErrorIs(t, err, images.ErrNotFound)
	assert.Contains(t, err.Error(), "docker.l5d.io/buoyantio/missing:v1")

	_, err = src.Resolve(t.Context(), "not a reference", nil)
	require.ErrorIs(t, err, images.ErrInvalidReference)
	assert.Contains(t, err.Error(), "not a reference")
}

func TestRegistryAccounts(t *testing.T) {
	reg := imagestest.Serve(t)
	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/app"}, User: "app"},
		Files: map[string]string{
			"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
			"etc/group":  "root:x:0:\napp:x:1002:\nextra:x:2000:app,other\n",
		},
	})
	imagestest.Push(t, reg.Host, "acme/app:1", img)
	src := images.NewRegistry(images.RegistryConfig{Mirrors: map[string][]images.Mirror{"registry.example": {{Host: reg.Host, Insecure: true}}}})
	got, err := src.Resolve(t.Context(), "registry.example/acme/app:1", nil)
	require.NoError(t, err)
	acct, err := src.Accounts(t.Context(), got, nil)
	require.NoError(t, err)
	u, ok := acct.LookupUser("app")
	require.True(t, ok)
	assert.Equal(t, images.User{Name: "app", UID: 1001, GID: 1002}, u)
	assert.Equal(t, []int64{2000}, acct.GroupsOf("app"))
}

func TestErrorWrapping(t *testing.T) {
	err := &images.Error{Image: "x", Err: images.ErrNotFound}
	assert.ErrorIs(t, err, images.ErrNotFound)
}

// lookup is one call of an Observer.
type lookup struct {
	kind   images.LookupKind
	result images.LookupResult
	d      time.Duration
}

// recorder is an Observer that records every lookup.
type recorder struct {
	mu      sync.Mutex
	lookups []lookup
}

func (r *recorder) ObserveLookup(kind images.LookupKind, result images.LookupResult, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups = append(r.lookups, lookup{kind, result, d})
}

// take returns the lookups recorded since the last call.
func (r *recorder) take() []lookup {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lookups
	r.lookups = nil
	return out
}

func kindsAndResults(ls []lookup) []string {
	var out []string
	for _, l := range ls {
		out = append(out, string(l.kind)+"/"+string(l.result))
	}
	return out
}

func TestRegistryObserver(t *testing.T) {
	reg := imagestest.Serve(t)
	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/app"}, User: "app"},
		Files:  map[string]string{"etc/passwd": "app:x:1001:1001::/:/bin/sh\n", "etc/group": "app:x:1001:\n"},
	})
	digest := imagestest.Push(t, reg.Host, "acme/app:1", img)
	rec := &recorder{}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: reg.Host, Insecure: true}}},
		SkipOrigin: []string{"registry.example"},
		Observer:   rec,
	})
	pinned := "registry.example/acme/app@" + digest

	// first resolution: both fetched from the registry, in measurable time
	got, err := src.Resolve(t.Context(), pinned, nil)
	require.NoError(t, err)
	first := rec.take()
	assert.Equal(t, []string{"manifest/miss", "config/miss"}, kindsAndResults(first))
	for _, l := range first {
		assert.Positive(t, l.d, "%s", l.kind)
	}

	// second resolution of the digest: from the cache, no request
	reg.ResetCounter()
	_, err = src.Resolve(t.Context(), pinned, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/hit", "config/hit"}, kindsAndResults(rec.take()))
	assert.Zero(t, reg.BytesServed())

	// a tag always goes to the registry; its config is cached by digest
	_, err = src.Resolve(t.Context(), "registry.example/acme/app:1", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/miss", "config/hit"}, kindsAndResults(rec.take()))

	// accounts: a layer scan, then the cache
	_, err = src.Accounts(t.Context(), got, nil)
	require.NoError(t, err)
	acct := rec.take()
	require.Equal(t, []string{"accounts/miss"}, kindsAndResults(acct))
	assert.Positive(t, acct[0].d)
	_, err = src.Accounts(t.Context(), got, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"accounts/hit"}, kindsAndResults(rec.take()))

	// a missing image is an error, and nothing else is looked up
	_, err = src.Resolve(t.Context(), "registry.example/acme/missing:1", nil)
	require.ErrorIs(t, err, images.ErrNotFound)
	assert.Equal(t, []string{"manifest/error"}, kindsAndResults(rec.take()))
}

func TestRegistryObserverUnreachable(t *testing.T) {
	// a port nothing listens on
	var lc net.ListenConfig
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	host := l.Addr().String()
	require.NoError(t, l.Close())

	rec := &recorder{}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"registry.example": {{Host: host, Insecure: true}}},
		SkipOrigin: []string{"registry.example"},
		Observer:   rec,
	})
	_, err = src.Resolve(t.Context(), "registry.example/acme/app:1", nil)
	require.ErrorIs(t, err, images.ErrUnreachable)
	assert.NotContains(t, err.Error(), host, "mirror hosts are configuration, not the pod's")
	got := rec.take()
	require.Equal(t, []string{"manifest/error"}, kindsAndResults(got))
	assert.Positive(t, got[0].d)

	_, err = src.Accounts(t.Context(), &images.Image{Repository: "registry.example/acme/app", Digest: "sha256:" + strings.Repeat("0", 64)}, nil)
	require.Error(t, err)
	assert.Equal(t, []string{"accounts/error"}, kindsAndResults(rec.take()))
}

func TestObserverFunc(t *testing.T) {
	var got lookup
	var o images.Observer = images.ObserverFunc(func(k images.LookupKind, r images.LookupResult, d time.Duration) { got = lookup{k, r, d} })
	o.ObserveLookup(images.KindConfig, images.ResultHit, time.Second)
	assert.Equal(t, lookup{images.KindConfig, images.ResultHit, time.Second}, got)
}

// TestRegistryCacheScopedByCredentials: what was fetched with pull secrets is
// served from the cache only to lookups with the same credentials, so a pod
// without them cannot learn a private image's configuration or accounts.
func TestRegistryCacheScopedByCredentials(t *testing.T) {
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || users[u] != p {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/app"}, Env: []string{"PRIVATE=1"}, User: "app"},
		Files:  map[string]string{"etc/passwd": "app:x:1001:1001::/:/bin/sh\n", "etc/group": "app:x:1001:\n"},
	})
	ref, err := name.ParseReference(host+"/acme/private:1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})))
	digest, err := img.Digest()
	require.NoError(t, err)

	rec := &recorder{}
	src := images.NewRegistry(images.RegistryConfig{Observer: rec, Insecure: []string{host}})
	pinned := host + "/acme/private@" + digest.String()
	keychainFor := func(user, pw string) authn.Keychain {
		cfg := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, host, user, pw)
		kc, err := images.NewPullSecretKeychain([]corev1.Secret{{
			ObjectMeta: metav1.ObjectMeta{Name: "pull"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)},
		}})
		require.NoError(t, err)
		return kc
	}
	alice, bob, mallory := keychainFor("alice", "alice-pw"), keychainFor("bob", "bob-pw"), keychainFor("mallory", "guess")

	got, err := src.Resolve(t.Context(), pinned, alice)
	require.NoError(t, err)
	assert.Contains(t, got.Config.Env, "PRIVATE=1")
	assert.Equal(t, []string{"manifest/miss", "config/miss"}, kindsAndResults(rec.take()))
	_, err = src.Accounts(t.Context(), got, alice)
	require.NoError(t, err)
	assert.Equal(t, []string{"accounts/miss"}, kindsAndResults(rec.take()))

	// the same credentials: from the cache
	_, err = src.Resolve(t.Context(), pinned, alice)
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/hit", "config/hit"}, kindsAndResults(rec.take()))
	_, err = src.Accounts(t.Context(), got, alice)
	require.NoError(t, err)
	assert.Equal(t, []string{"accounts/hit"}, kindsAndResults(rec.take()))

	// no or wrong credentials: the registry decides, not the cache
	for name, kc := range map[string]authn.Keychain{"none": nil, "wrong password": mallory} {
		_, err = src.Resolve(t.Context(), pinned, kc)
		require.Error(t, err, name)
		assert.Equal(t, []string{"manifest/error"}, kindsAndResults(rec.take()), name)
		_, err = src.Accounts(t.Context(), got, kc)
		require.Error(t, err, name)
		assert.Equal(t, []string{"accounts/error"}, kindsAndResults(rec.take()), name)
	}

	// other valid credentials fetch for themselves
	_, err = src.Resolve(t.Context(), pinned, bob)
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/miss", "config/miss"}, kindsAndResults(rec.take()))
}
