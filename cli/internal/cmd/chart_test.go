package cmd

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
)

// chartGolden is the chart's rendered output (helm template) that the
// integration module keeps as a golden file.
const chartGolden = "../../../integration/testdata/chart/default.golden.yaml"

// anyImage resolves every image to a fixed configuration: the chart's
// golden output pins placeholder digests that no registry serves.
type anyImage struct{}

func (anyImage) Resolve(_ context.Context, image string, _ authn.Keychain) (*images.Image, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", image, err)
	}
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(image)))
	if d, ok := ref.(name.Digest); ok {
		digest = d.DigestStr()
	}
	repo := image
	if i := strings.IndexAny(image, "@"); i >= 0 {
		repo = image[:i]
	} else if t, ok := ref.(name.Tag); ok {
		repo = strings.TrimSuffix(image, ":"+t.TagStr())
	}
	return &images.Image{Repository: repo, Digest: digest, Config: images.Config{Entrypoint: []string{"/app"}, Env: []string{"PATH=/"}}}, nil
}

func (anyImage) Accounts(context.Context, *images.Image, authn.Keychain) (*images.Accounts, error) {
	return &images.Accounts{}, nil
}

// TestGenerateFromChart feeds the chart's rendered output to generate, as
// the tutorial does: the settings ConfigMap is the webhook's settings, the
// Coordinator StatefulSet gives the Coordinator's entry, the webhook
// Deployment is not a workload of the manifest.
func TestGenerateFromChart(t *testing.T) {
	var seen images.RegistryConfig
	orig := newImageSource
	newImageSource = func(cfg images.RegistryConfig) images.Source { seen = cfg; return anyImage{} }
	t.Cleanup(func() { newImageSource = orig })

	ws := t.TempDir()
	args := []string{"generate", "-w", ws, "-o", "json", "--settings", chartGolden, "--coordinator-yaml", chartGolden,
		"--reference-values=snp", emojivotoDir(t)}
	// the chart's defaults leave the Coordinator's reference values to
	// the owner, and the snp preset has fields to fill in: the
	// Initializers cannot be configured from them
	_, stderr, code := run(t, args...)
	require.Equal(t, ExitUsage, code, stderr)
	assert.Contains(t, stderr, "leaves fields to fill in (ProductName, MinimumTCB, TrustedMeasurement)")

	rv, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	require.NoError(t, err)
	stdout, stderr, code := run(t, append(args, "--coordinator-reference-values="+string(rv))...)
	require.Equal(t, ExitOK, code, stderr)
	var res generateResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))

	var coordinators []generateEntry
	for _, p := range res.Policies {
		if p.Role == string(manifest.RoleCoordinator) {
			coordinators = append(coordinators, p)
		}
	}
	require.Len(t, coordinators, 1)
	assert.Equal(t, "contrast-coordinator", coordinators[0].Name)
	assert.Equal(t, filepath.Clean(chartGolden), filepath.Clean(coordinators[0].File))
	require.Len(t, res.Skipped, 1, "the webhook Deployment of the chart")
	assert.Contains(t, res.Skipped[0].Reason, "not the Coordinator")
	assert.Len(t, res.Policies, 5)
	assert.Equal(t, "linux", seen.Platform.OS, "the chart's registry settings reach the image source")
}
