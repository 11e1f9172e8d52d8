package images_test

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	require.Error(t, err)
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
