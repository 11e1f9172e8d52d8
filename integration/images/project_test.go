package images

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBuildComponentsReproducible builds the Coordinator image twice: equal
// commits give equal digests (the digest `make images` prints is the one
// the chart pins). The webhook, Initializer and mesh proxy are built the
// same way; TestChartOnRealNode runs all four.
func TestBuildComponentsReproducible(t *testing.T) {
	root, err := RepoRoot(".")
	require.NoError(t, err)
	first, err := BuildComponents(t.Context(), root, "0123abcd", []string{"coordinator"})
	require.NoError(t, err)
	second, err := BuildComponents(t.Context(), root, "0123abcd", []string{"coordinator"})
	require.NoError(t, err)
	assert.Equal(t, must(first["coordinator"].Digest()), must(second["coordinator"].Digest()), "the image is reproducible")
	cf := must(first["coordinator"].ConfigFile())
	assert.Equal(t, []string{"/bin/coordinator"}, cf.Config.Entrypoint)
	assert.Equal(t, "0123abcd", cf.Config.Labels["org.opencontainers.image.revision"], "the image names its commit")
	assert.Equal(t, "Contrast Coordinator", cf.Config.Labels["org.opencontainers.image.title"])
}

// TestComponentSpecs: every component is one static binary built from the
// workspace at the root, named after the component.
func TestComponentSpecs(t *testing.T) {
	root, err := RepoRoot(".")
	require.NoError(t, err)
	for _, c := range Components {
		spec, err := ComponentSpec(root, c.Name, "rev")
		var missing *MissingProgramError
		if errors.As(err, &missing) {
			t.Logf("%s: %v", c.Name, err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"/bin/" + c.Name: "./" + c.Folder}, spec.Binaries)
		assert.Equal(t, root, spec.Dir)
		assert.Equal(t, "rev", spec.Labels["org.opencontainers.image.revision"])
	}
}

// TestBuildComponentsMissingProgram: a component whose program is not in
// the checkout fails by name before anything is built.
func TestBuildComponentsMissingProgram(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26.0\n"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "initializer", "cmd", "mesh-proxy"), 0o750))

	_, err := BuildComponents(t.Context(), root, "", []string{"initializer", "mesh-proxy"})
	var missing *MissingProgramError
	require.ErrorAs(t, err, &missing)
	assert.Equal(t, "initializer", missing.Component.Name)
	require.ErrorContains(t, err, "image initializer: the Contrast Initializer program (initializer/cmd/initializer) does not exist")
	require.ErrorContains(t, err, "image mesh-proxy: the Contrast service-mesh proxy program (initializer/cmd/mesh-proxy) does not exist", "a folder without Go files has no program either")

	_, err = BuildComponents(t.Context(), root, "", []string{"nginx"})
	require.ErrorContains(t, err, `unknown image "nginx": want one of coordinator, webhook, initializer, mesh-proxy`)
	assert.NotErrorAs(t, err, &missing)
}
