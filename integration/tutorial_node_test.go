package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
	"github.com/contrast-cc/contrast/integration/tutorial"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/inject"
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
	t.Run("RealWorldCorpusThroughTheChart", func(t *testing.T) {
		testCorpusThroughChart(ctx, t, c, tut)
	})
	t.Logf("TIMING whole test %s", time.Since(start).Round(time.Second))
}

// testCorpusThroughChart applies the published workloads of
// ../shared/workloads-real and emojivoto, unmodified, to opted-in
// namespaces of the tutorial's cluster, admitted by the Helm-installed
// webhook (a pod): every pod the controllers create is admitted with a
// policy hash that contrast generate wrote for its folder, and the
// templates of corpusDenials are denied for their reason. Their upstream
// images cannot run here: stand-ins under the same names are served by the
// node's registry, which the webhook reaches as a mirror of every registry
// they name. The node is cordoned meanwhile, so the pods are admitted but
// not started (only the DaemonSet's may be, and it cannot run).
func testCorpusThroughChart(ctx context.Context, t *testing.T, c *cluster.Cluster, tut *tutorial.Tutorial) {
	start := time.Now()
	files, corpus := readCorpus(t)
	specs, hosts := standIns(t, corpus)
	for repoTag, spec := range specs {
		i := strings.LastIndex(repoTag, ":")
		_, err := images.Push(ctx, c.Registry(), repoTag[:i], repoTag[i+1:], imagestest.Build(t, spec))
		require.NoError(t, err, repoTag)
	}
	mirrors := map[string]any{}
	for _, h := range hosts {
		mirrors[h] = []string{tut.RegistryMirror()}
	}
	chartFile, err := tut.UpgradeControlPlane(ctx, "corpus", map[string]any{"webhook": map[string]any{"registry": map[string]any{
		"mirrors":    mirrors,
		"skipOrigin": append(hosts, c.Registry(), tutorial.MirrorHost),
	}}})
	require.NoError(t, err)

	node := strings.TrimPrefix(strings.TrimSpace(c.Kubectl(t, "get", "nodes", "-o", "name")), "node/")
	c.Kubectl(t, "cordon", node)
	t.Cleanup(func() { c.Kubectl(t, "uncordon", node) })

	generated := map[string]*manifest.Manifest{}
	var namespaces []string
	for _, d := range slices.Sorted(maps.Keys(files)) {
		ns := corpusNamespace(t, corpus, d)
		if slices.ContainsFunc(corpus, func(cw corpusWorkload) bool { _, denied := corpusDenials[cw.key()]; return cw.dir == d && !denied }) {
			ws := filepath.Join(t.TempDir(), d)
			require.NoError(t, tut.GenerateFor(ctx, ws, chartFile, ns, withoutDenied(t, d, files[d])...), d)
			m, err := readManifest(filepath.Join(ws, "manifest.json"))
			require.NoError(t, err)
			generated[ns] = m
		}
		namespaces = append(namespaces, ns)

		c.Kubectl(t, "create", "namespace", ns)
		c.Kubectl(t, "label", "namespace", ns, inject.LabelInject+"=enabled")
		require.NoError(t, c.WaitForNamespaceReady(ctx, ns))
		args := []string{"apply", "-n", ns}
		for _, f := range files[d] {
			args = append(args, "-f", f)
		}
		c.Kubectl(t, args...)
	}
	t.Cleanup(func() {
		for _, ns := range namespaces {
			_, _ = c.RunKubectl(context.Background(), nil, "delete", "namespace", ns, "--wait=false")
		}
	})
	for _, cw := range corpus {
		if cw.w.Kind == policy.KindCronJob {
			c.Kubectl(t, "create", "job", "-n", cw.w.Namespace, cw.w.Name+"-29461757", "--from=cronjob/"+cw.w.Name)
		}
	}

	admitted := 0
	for _, cw := range corpus {
		if d, ok := corpusDenials[cw.key()]; ok {
			msg := waitForDenial(ctx, t, c, cw.w)
			assert.Contains(t, msg, d.field+": ", "%s: denied for its image", cw.key())
			assert.Contains(t, msg, d.reason, cw.key())
			continue
		}
		pod := waitForPodOf(ctx, t, c, cw.w)
		h := pod.Annotations[policy.AnnotationPolicyHash]
		if assert.Contains(t, generated[cw.w.Namespace].Policies, manifest.HexString(h),
			"%s: the installed webhook admitted pod %s with a policy contrast generate wrote", cw.key(), pod.Name) {
			admitted++
		}
	}
	assert.Equal(t, len(corpus)-len(corpusDenials), admitted)
	t.Logf("TIMING corpus through the chart: %d of %d pod templates admitted with generate's hash, %d denied as expected, in %s",
		admitted, len(corpus), len(corpusDenials), time.Since(start).Round(time.Second))
}

// withoutDenied returns the files of folder d, with the documents of the
// pod templates that stay denied (corpusDenials; generate refuses them as
// the webhook does, TestRealWorldCorpus checks that) left out of copies:
// generate writes no manifest while one workload is refused.
func withoutDenied(t *testing.T, d string, files []string) []string {
	t.Helper()
	var out []string
	dir := t.TempDir()
	for i, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		var kept [][]byte
		dropped := false
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			require.NoError(t, yaml.Unmarshal(doc, &obj))
			if _, ok := corpusDenials[d+"/"+obj.Kind+"/"+obj.Metadata.Name]; ok {
				dropped = true
				continue
			}
			kept = append(kept, doc)
		}
		if !dropped {
			out = append(out, f)
			continue
		}
		cp := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(f)))
		require.NoError(t, os.WriteFile(cp, bytes.Join(kept, []byte("\n---\n")), 0o600))
		out = append(out, cp)
	}
	return out
}

// corpusNamespace is the namespace of the workloads of folder d.
func corpusNamespace(t *testing.T, corpus []corpusWorkload, d string) string {
	t.Helper()
	ns := ""
	for _, cw := range corpus {
		if cw.dir == d {
			require.True(t, ns == "" || ns == cw.w.Namespace, "one namespace per folder")
			ns = cw.w.Namespace
		}
	}
	require.NotEmpty(t, ns, d)
	return ns
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
