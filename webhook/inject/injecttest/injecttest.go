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
