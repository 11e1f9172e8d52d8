// Package injecttest serves the test image catalog together with stand-ins
// for the Initializer and mesh-proxy images, for tests of the injection, the
// admission server and the integration tests.
package injecttest

import (
	"context"
	"maps"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

// ContrastImages are stand-ins for the Initializer and mesh-proxy images,
// under registry.example/.
var ContrastImages = map[string]imagestest.Spec{
	"contrast/initializer:test": {
		Config: v1.Config{Entrypoint: []string{"/initializer"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"initializer": "initializer"},
	},
	"contrast/mesh-proxy:test": {
		Config: v1.Config{Entrypoint: []string{"/mesh-proxy"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"mesh-proxy": "mesh-proxy"},
	},
}

// Images are a registry serving imagestest.Catalog and ContrastImages, with
// the Contrast images pinned by digest.
type Images struct {
	Source           *images.Registry
	Registry         *imagestest.Registry
	InitializerImage string
	ProxyImage       string
}

// Serve starts an in-process registry (reached as docker.l5d.io/... and
// registry.example/... through mirrors).
func Serve(t testing.TB) *Images {
	t.Helper()
	catalog := maps.Clone(imagestest.Catalog)
	maps.Copy(catalog, ContrastImages)
	src, reg := imagestest.ServeCatalog(t, catalog)
	return pinned(t, src, reg)
}

// ServeDockerRegistry is Serve with a real docker-registry (Debian package
// docker-registry; the test is skipped without it) holding the images,
// reached through the registry-mirror setting. Registry is nil.
func ServeDockerRegistry(t testing.TB) (*Images, string) {
	t.Helper()
	host := imagestest.StartDockerRegistry(t)
	catalog := maps.Clone(imagestest.Catalog)
	maps.Copy(catalog, ContrastImages)
	for repoTag, spec := range catalog {
		imagestest.Push(t, host, repoTag, imagestest.Build(t, spec))
	}
	mirror := []images.Mirror{{Host: host, Insecure: true}}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
	})
	return pinned(t, src, nil), host
}

// ServeWith is Serve with more images: extra maps repository:tag (the
// path below the registry host) to an image, and every host in hosts is
// reached through the in-process registry as a mirror, like docker.l5d.io
// and registry.example.
func ServeWith(t testing.TB, extra map[string]imagestest.Spec, hosts []string) *Images {
	t.Helper()
	reg := imagestest.Serve(t)
	catalog := maps.Clone(imagestest.Catalog)
	maps.Copy(catalog, ContrastImages)
	maps.Copy(catalog, extra)
	for repoTag, spec := range catalog {
		imagestest.Push(t, reg.Host, repoTag, imagestest.Build(t, spec))
	}
	mirror := []images.Mirror{{Host: reg.Host, Insecure: true}}
	cfg := images.RegistryConfig{Mirrors: map[string][]images.Mirror{}}
	for _, h := range append([]string{"docker.l5d.io", "registry.example"}, hosts...) {
		cfg.Mirrors[h] = mirror
		cfg.SkipOrigin = append(cfg.SkipOrigin, h)
	}
	return pinned(t, images.NewRegistry(cfg), reg)
}

func pinned(t testing.TB, src *images.Registry, reg *imagestest.Registry) *Images {
	t.Helper()
	pin := func(image string) string {
		img, err := src.Resolve(context.Background(), image, nil)
		if err != nil {
			t.Fatalf("resolving %s: %v", image, err)
		}
		return img.Reference()
	}
	return &Images{
		Source:           src,
		Registry:         reg,
		InitializerImage: pin("registry.example/contrast/initializer:test"),
		ProxyImage:       pin("registry.example/contrast/mesh-proxy:test"),
	}
}
