package policy_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// emojivotoDir is the emojivoto tutorial's manifests in ../shared.
func emojivotoDir(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t, shareddata.Emojivoto)
}

// kataDir is the Kata genpolicy request corpus in ../shared.
func kataDir(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t, shareddata.KataPolicy)
}

// testRegistry serves the test image catalog, reachable as docker.l5d.io/...
// and registry.example/... through mirrors.
func testRegistry(t testing.TB) (*images.Registry, *imagestest.Registry) {
	t.Helper()
	return imagestest.ServeCatalog(t, imagestest.Catalog)
}

func readWorkloads(t testing.TB, files ...string) []policy.Workload {
	t.Helper()
	var out []policy.Workload
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		ws, err := policy.DecodeWorkloads(b)
		require.NoError(t, err)
		out = append(out, ws...)
	}
	return out
}

func emojivotoWorkloads(t testing.TB) []policy.Workload {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(emojivotoDir(t), "*.yml"))
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yml" })
	ws := readWorkloads(t, files...)
	require.Len(t, ws, 4)
	return ws
}

// imageSize is the size of an image's manifest, config and layers.
func imageSize(t testing.TB, host, repoTag string) int64 {
	t.Helper()
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	img, err := remote.Image(ref)
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}
