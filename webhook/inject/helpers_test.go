package inject

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// testMutator serves the test image catalog and the Contrast images from an
// in-process registry (reached through mirrors) and returns a Mutator.
func testMutator(t testing.TB) *Mutator {
	t.Helper()
	imgs := injecttest.Serve(t)
	cfg := Config{
		InitializerImage:           imgs.InitializerImage,
		ProxyImage:                 imgs.ProxyImage,
		CoordinatorAddress:         "coordinator.contrast-system:7777",
		Platform:                   attest.PlatformSNP,
		CoordinatorPolicyHashes:    [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	require.NoError(t, cfg.Validate())
	return &Mutator{Config: cfg, Images: imgs.Source}
}

func readWorkloads(t testing.TB, path string) []policy.Workload {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	ws, err := policy.DecodeWorkloads(b)
	require.NoError(t, err)
	return ws
}

// emojivotoFiles are the emojivoto manifests in ../shared (the files
// kustomization.yml lists).
func emojivotoFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(shareddata.Dir(t, shareddata.Emojivoto), "*.yml"))
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yml" })
	require.NotEmpty(t, files)
	return files
}
