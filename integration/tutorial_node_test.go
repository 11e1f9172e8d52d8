package integration_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
	"github.com/contrast-cc/contrast/integration/tutorial"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// TestTutorialOnRealNode runs the tutorial of `make demo` (package
// tutorial: helm install with the project's images, contrast generate, set
// and verify, kubectl apply of the unmodified workloads, clients outside the
// mesh with curl and openssl, a manifest update, contrast recover) on the
// real node, then checks what a user relies on and what must be refused.
func TestTutorialOnRealNode(t *testing.T) {
	for _, tool := range []string{"curl", "openssl"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "the tutorial's clients outside the mesh (.ci/run installs %s)", tool)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	c := cluster.Start(t, cluster.Options{Node: true, Mirrors: []string{tutorial.MirrorHost}})
	root, err := images.RepoRoot(".")
	require.NoError(t, err)

	var narration bytes.Buffer
	tut := tutorial.New(root, t.TempDir(), c, &narration, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		_ = tut.Close()
		if t.Failed() {
			t.Logf("the tutorial's output:\n%s", narration.String())
		}
	})
	runStart := time.Now()
	require.NoError(t, tut.Run(ctx))
	t.Logf("TIMING tutorial %s (whole test so far %s)", time.Since(runStart).Round(time.Second), time.Since(start).Round(time.Second))

	ws := tut.Workspace
	m, err := readManifest(filepath.Join(ws, "manifest.json"))
	require.NoError(t, err)

	t.Run("AdmittedPoliciesAreGenerated", func(t *testing.T) {
		pods, err := c.Pods(ctx, tutorial.Namespace, "")
		require.NoError(t, err)
		require.NotEmpty(t, pods)
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				continue
			}
			h := p.Annotations[policy.AnnotationPolicyHash]
			assert.Contains(t, m.Policies, manifest.HexString(h), "pod %s: the webhook's policy is one contrast generate wrote", p.Name)
		}
	})

	t.Run("VerifyWroteTheFiles", func(t *testing.T) {
		for _, f := range []string{"mesh-ca.pem", "coordinator-root-ca.pem"} {
			raw, err := os.ReadFile(filepath.Join(ws, "verify", f))
			require.NoError(t, err)
			assert.Contains(t, string(raw), "BEGIN CERTIFICATE")
		}
		root, err := os.ReadFile(filepath.Join(ws, "coordinator-root-ca.pem"))
		require.NoError(t, err)
		verified, err := os.ReadFile(filepath.Join(ws, "verify", "coordinator-root-ca.pem"))
		require.NoError(t, err)
		assert.Equal(t, string(root), string(verified), "the root CA survived the recovery and the manifest update")
	})

	t.Run("SetWithoutOwnerKeyRefused", func(t *testing.T) {
		other := copyWorkspace(t, ws)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(other, "workload-owner.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600))
		out, code := runContrast(ctx, t, tut.Contrast, "set", "-w", other, "-c", tut.CoordinatorAddr)
		assert.Equal(t, 3, code, "refused by the Coordinator: %s", out)
		assert.Contains(t, out, "PermissionDenied")
		assert.Contains(t, out, "not a workload-owner key", "refused for the owner key, not for anything else")
	})

	t.Run("VerifyOtherManifestFails", func(t *testing.T) {
		other := copyWorkspace(t, ws)
		om, err := readManifest(filepath.Join(other, "manifest.json"))
		require.NoError(t, err)
		for h, e := range om.Policies {
			if e.Role == "" {
				e.SANs = append(e.SANs, "someone-else")
				om.Policies[h] = e
				break
			}
		}
		raw, err := json.Marshal(om)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(other, "manifest.json"), raw, 0o600))
		out, code := runContrast(ctx, t, tut.Contrast, "verify", "-w", other, "-c", tut.CoordinatorAddr)
		assert.Equal(t, 4, code, "a mismatch: %s", out)
		assert.Contains(t, out, "manifest", "the mismatch named is the manifest's")
	})
	t.Logf("TIMING whole test %s", time.Since(start).Round(time.Second))
}

func readManifest(path string) (*manifest.Manifest, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // a test's workspace
	if err != nil {
		return nil, err
	}
	return manifest.Parse(raw)
}

// copyWorkspace copies the files of a contrast workspace (not its
// folders) to a new one.
func copyWorkspace(t *testing.T, ws string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(ws)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(ws, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), raw, 0o600))
	}
	require.NoError(t, os.CopyFS(filepath.Join(dst, "policies"), os.DirFS(filepath.Join(ws, "policies"))))
	return dst
}

// runContrast runs the CLI and returns its combined output and exit code.
func runContrast(ctx context.Context, t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput() //nolint:gosec // the CLI under test
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return string(out), exitErr.ExitCode()
	}
	require.NoError(t, err, string(out))
	return string(out), 0
}
