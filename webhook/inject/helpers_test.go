package inject

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Stand-ins for the Initializer and mesh-proxy images.
var contrastImages = map[string]imagestest.Spec{
	"contrast/initializer:test": {
		Config: v1.Config{Entrypoint: []string{"/initializer"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"initializer": "initializer"},
	},
	"contrast/mesh-proxy:test": {
		Config: v1.Config{Entrypoint: []string{"/mesh-proxy"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"mesh-proxy": "mesh-proxy"},
	},
}

// testMutator serves the test image catalog and the Contrast images from an
// in-process registry (reached through mirrors) and returns a Mutator.
func testMutator(t testing.TB) (*Mutator, *images.Registry) {
	t.Helper()
	catalog := maps.Clone(imagestest.Catalog)
	maps.Copy(catalog, contrastImages)
	src, _ := imagestest.ServeCatalog(t, catalog)
	pin := func(image string) string {
		img, err := src.Resolve(context.Background(), image, nil)
		require.NoError(t, err)
		return img.Reference()
	}
	cfg := Config{
		InitializerImage:   pin("registry.example/contrast/initializer:test"),
		ProxyImage:         pin("registry.example/contrast/mesh-proxy:test"),
		CoordinatorAddress: "coordinator.contrast-system:7777",
	}
	require.NoError(t, cfg.Validate())
	return &Mutator{Config: cfg, Images: src}, src
}

func readWorkloads(t testing.TB, path string) []policy.Workload {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	ws, err := policy.DecodeWorkloads(b)
	require.NoError(t, err)
	return ws
}

// emojivotoFiles are the unchanged emojivoto manifests of the repository
// (the files kustomization.yml lists).
func emojivotoFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("../../examples/emojivoto/*.yml")
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yml" })
	require.NotEmpty(t, files)
	return files
}
