package integration_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// hostDataOf derives HOST_DATA from a pod's initdata annotation exactly as
// Kata does (SHA-256 over the raw initdata TOML).
func hostDataOf(t *testing.T, annotation string) [32]byte {
	t.Helper()
	gz, err := base64.StdEncoding.DecodeString(annotation)
	require.NoError(t, err)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	toml, err := io.ReadAll(zr)
	require.NoError(t, err)
	return sha256.Sum256(toml)
}

// TestChainOfTrust closes the chain: the manifest is built from the policies
// of the unmodified emojivoto YAML (what contrast generate does), set on a
// Coordinator running against the same API server; kubectl apply of the
// same YAML goes through the webhook; for every pod the controllers create,
// a simulated TEE whose HOST_DATA is derived from the pod's initdata
// annotation as admitted obtains a mesh certificate with the SANs of its
// manifest entry. A pod whose policy annotation is edited after admission
// is refused with PermissionDenied naming the unknown policy hash.
func TestChainOfTrust(t *testing.T) {
	imgs := injecttest.Serve(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)
	registerValidatingWebhook(ctx, t, c, wh.ValidateURL, wh.CABundle)

	// contrast generate: policies of the YAML, after the same injection
	var workloads []policy.Workload
	for _, f := range []string{"web.yml", "emoji.yml", "voting.yml", "vote-bot.yml"} {
		workloads = append(workloads, decode(t, filepath.Join(emojivotoDir(t), f))...)
	}
	require.Len(t, workloads, 4)
	sans := map[string][]string{}
	var entries []coordinatortest.Workload
	docs := [][]byte{}
	for _, w := range workloads {
		yamlSide := w
		yamlSide.Template = *w.Template.DeepCopy()
		res, err := wh.Mutator.MutateWorkload(ctx, &yamlSide, nil)
		require.NoError(t, err)
		p := coordinatortest.Policy{Doc: res.InitData, Hash: [32]byte(res.Digest)}
		entry := manifest.PolicyEntry{SANs: []string{w.Name, w.Name + ".emojivoto.svc.cluster.local"}}
		entry.WorkloadSecretID = "emojivoto/" + w.Name
		entries = append(entries, coordinatortest.Workload{Policy: p, Entry: entry})
		docs = append(docs, p.Doc)
		sans[hex.EncodeToString(res.Digest)] = entry.SANs
	}

	// contrast set: the Coordinator keeps its history in the same API server
	h, _ := configMapHarness(t, c, "contrast-system")
	coord := h.Start(t)
	owner := coordinatortest.OwnerKey()
	m := h.Platform.Manifest(h.CoordinatorPolicy, entries, &owner.PublicKey)
	_, err := h.User(t, coord, owner).SetManifest(ctx, &userpb.SetManifestRequest{
		Manifest: coordinatortest.JSON(m),
		Policies: append([][]byte{h.CoordinatorPolicy.Doc}, docs...),
	})
	require.NoError(t, err)

	// kubectl apply of the unmodified YAML into the opted-in namespace
	createOptedInNamespace(ctx, t, c, "emojivoto")
	c.Kubectl(t, "apply", "-k", emojivotoDir(t))

	for _, w := range workloads {
		t.Run(w.Name, func(t *testing.T) {
			pod := waitForPodOf(ctx, t, c, w)
			hostData := hostDataOf(t, pod.Annotations[policy.AnnotationInitData])
			require.Equal(t, pod.Annotations[policy.AnnotationPolicyHash], hex.EncodeToString(hostData[:]))
			tee := h.Pod(t, coordinatortest.Policy{Hash: hostData}, nil)
			resp, err := coordinatortest.NewMeshCert(ctx, coord.MeshAddr(), coordinatortest.Issuer(tee.Device), tee.Key)
			require.NoError(t, err)
			chain := coordinatortest.ParseCerts(t, resp.GetCertChain())
			require.NotEmpty(t, chain)
			assert.ElementsMatch(t, sans[hex.EncodeToString(hostData[:])], chain[0].DNSNames)
			assert.NotEmpty(t, resp.GetWorkloadSecret())
		})
	}

	t.Run("policy edited after admission", func(t *testing.T) {
		pod := waitForPodOf(ctx, t, c, workloads[0])
		edited := tamper(t, pod.Annotations[policy.AnnotationInitData])
		tampered := []byte(`{"metadata":{"annotations":{"` + policy.AnnotationInitData + `":"` + edited + `"}}}`)
		_, err := c.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, tampered, metav1.PatchOptions{})
		require.NoError(t, err)
		got, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		require.NoError(t, err)
		hostData := hostDataOf(t, got.Annotations[policy.AnnotationInitData])
		tee := h.Pod(t, coordinatortest.Policy{Hash: hostData}, nil)
		_, err = coordinatortest.NewMeshCert(ctx, coord.MeshAddr(), coordinatortest.Issuer(tee.Device), tee.Key)
		require.Error(t, err)
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), hex.EncodeToString(hostData[:]))
	})
}

// tamper appends a comment to the initdata TOML inside annotation: the
// policy still parses, but its digest is not in the manifest.
func tamper(t *testing.T, annotation string) string {
	t.Helper()
	gz, err := base64.StdEncoding.DecodeString(annotation)
	require.NoError(t, err)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	toml, err := io.ReadAll(zr)
	require.NoError(t, err)
	toml = append(toml, []byte("\n# edited after admission\n")...)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err = zw.Write(toml)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}
