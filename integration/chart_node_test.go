package integration_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/integration/chart"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
	webhookimages "github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// TestChartOnRealNode installs the chart with the real helm binary and the
// project's own images from the node's registry, on the real node (kubelet,
// containerd, runc; the simulated TEE stands in for the hardware), and
// walks through what an operator does: install, opt a namespace in, set a
// manifest, upgrade, install a second release, uninstall.
func TestChartOnRealNode(t *testing.T) {
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	c := cluster.Start(t, cluster.Options{Node: true})
	t.Logf("TIMING cluster with real node ready in %s", time.Since(testStart).Round(time.Millisecond))

	root, err := images.RepoRoot(".")
	require.NoError(t, err)
	buildStart := time.Now()
	imgs, err := chart.BuildAndPush(ctx, root, c.Registry())
	require.NoError(t, err, "the chart installs the project's four images")
	app, err := images.Build(ctx, images.Spec{Binaries: map[string]string{"/testserver": images.TestServerPackage}})
	require.NoError(t, err)
	appRef, err := images.Push(ctx, c.Registry(), "contrast/testserver", "", app)
	require.NoError(t, err)
	t.Logf("TIMING images built and pushed in %s", time.Since(buildStart).Round(time.Millisecond))

	fwd, err := chart.ForwardRegistry(ctx, c, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = fwd.Close() })

	h, dir := chartHelm(t)
	h.Kubeconfig = c.Kubeconfig
	const release, ns = "contrast", "contrast-system"

	// The simulated vendor root the Coordinator signs with and clients trust.
	authFile := filepath.Join(t.TempDir(), "authority.pem")
	auth, err := sim.LoadOrCreateSNPAuthority(authFile)
	require.NoError(t, err)
	authPEM, err := os.ReadFile(authFile)
	require.NoError(t, err)
	c.Kubectl(t, "create", "namespace", ns)
	require.NoError(t, c.WaitForNamespaceReady(ctx, ns))
	_, err = c.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sim-authority"},
		Data:       map[string][]byte{"authority.pem": authPEM},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The launch measurement of the simulated guest, as a real one would be of the guest image.
	measurement := make([]byte, 48)
	_, err = rand.Read(measurement)
	require.NoError(t, err)
	ref := simReferenceValues(t, auth, measurement)
	refJSON, err := json.Marshal(manifest.ReferenceValues{SNP: []snp.ReferenceValues{ref}})
	require.NoError(t, err)
	var refValues map[string]any
	require.NoError(t, json.Unmarshal(refJSON, &refValues))
	values := chart.MergeValues(chart.LocalValues(imgs, c.Registry(), fwd.Addr), map[string]any{
		"coordinator": map[string]any{
			"simAuthoritySecret": "sim-authority", "simMeasurement": hex.EncodeToString(measurement),
			// what the Initializers require of the Coordinator
			"referenceValues": refValues,
		},
	})
	// What `contrast generate` does with the rendered chart: the policy of
	// the Coordinator's pod template, for the manifest's coordinator entry.
	coord := coordinatorPolicyFromTemplate(ctx, t, h, dir, release, ns, values)
	hash := hex.EncodeToString(coord.Digest)
	values = chart.MergeValues(values, map[string]any{"coordinator": map[string]any{"policyHash": hash}})

	installStart := time.Now()
	rel, err := chart.Install(ctx, h, dir, t.TempDir(), release, ns, values, 5*time.Minute)
	require.NoError(t, err)
	t.Logf("TIMING helm install --wait (webhook and Coordinator Ready) in %s", time.Since(installStart).Round(time.Millisecond))
	rendered, err := rel.Manifest(ctx)
	require.NoError(t, err)

	t.Run("ControlPlaneReady", func(t *testing.T) {
		webhooks := readyPods(ctx, t, c, ns, "app.kubernetes.io/instance=contrast,app.kubernetes.io/component=webhook")
		assert.Len(t, webhooks, 2, "both webhook replicas run as real pods and are Ready")
		for _, p := range webhooks {
			assert.Equal(t, cluster.NodeName, p.Spec.NodeName)
			assert.Empty(t, p.Annotations[policy.AnnotationPolicyHash], "the webhook's own pods never go through the webhook")
		}
		coordinators := readyPods(ctx, t, c, ns, "app.kubernetes.io/instance=contrast,app.kubernetes.io/component=coordinator")
		require.Len(t, coordinators, 1, "the Coordinator runs as a real pod and is Ready")
	})

	t.Run("CoordinatorPolicyEqualsTemplate", func(t *testing.T) {
		pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "contrast-coordinator-0", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, hash, pod.Annotations[policy.AnnotationPolicyHash],
			"the webhook's hash of the admitted Coordinator equals the one computed from helm template")
		assert.Equal(t, coord.Annotations[policy.AnnotationInitData], pod.Annotations[policy.AnnotationInitData])
		assert.Equal(t, "runc", *runtimeClassHandler(ctx, t, c, ptr.Deref(pod.Spec.RuntimeClassName, "")))
	})

	const apps = "chart-apps"
	createOptedInNamespace(ctx, t, c, apps)
	t.Run("OptedInNamespaceMutated", func(t *testing.T) {
		pod := applyPod(ctx, t, c, apps, "app", appRef, nil)
		assert.Equal(t, "contrast-cc", ptr.Deref(pod.Spec.RuntimeClassName, ""))
		assert.Len(t, pod.Annotations[policy.AnnotationPolicyHash], 64)
		require.NotEmpty(t, pod.Spec.InitContainers)
		assert.Equal(t, inject.InitializerName, pod.Spec.InitContainers[0].Name)
		assert.Equal(t, imgs.Initializer, pod.Spec.InitContainers[0].Image)
		assert.Equal(t, appRef, pod.Spec.Containers[0].Image, "pinned by digest")

		out := applyPod(ctx, t, c, apps, "opted-out", appRef, map[string]string{inject.LabelInject: "disabled"})
		assert.Empty(t, out.Annotations[policy.AnnotationPolicyHash], "an opted-out pod is left alone")
		assert.Nil(t, out.Spec.RuntimeClassName)
	})

	var latest []byte
	t.Run("ManifestSetAtInstalledCoordinator", func(t *testing.T) {
		latest = setManifest(ctx, t, c, ns, ref, coord)
		cms, err := c.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "contrast.cc/history"})
		require.NoError(t, err)
		assert.NotEmpty(t, cms.Items, "the Coordinator keeps its history in ConfigMaps")
	})

	t.Run("Mesh", func(t *testing.T) {
		require.NotEmpty(t, latest, "the manifest was set")
		testMeshOnRealNode(ctx, t, &meshNodeEnv{c: c, ns: ns, ref: ref, coord: coord, auth: auth, measurement: measurement, appRef: appRef, latest: latest})
	})

	t.Run("UpgradeRollsWebhookWithoutFailedAdmission", func(t *testing.T) {
		before := podNames(ctx, t, c, ns, "app.kubernetes.io/component=webhook")
		loop := startAdmissionLoop(ctx, t, c, apps, appRef, "contrast-cc")
		time.Sleep(2 * time.Second)
		upStart := time.Now()
		changed := chart.MergeValues(values, map[string]any{"webhook": map[string]any{"logLevel": "debug"}})
		require.NoError(t, rel.Upgrade(ctx, t.TempDir(), changed, 5*time.Minute))
		// Keep admitting while the old replicas finish terminating.
		time.Sleep(8 * time.Second)
		admitted, failures := loop.stop()
		t.Logf("TIMING helm upgrade --wait in %s; %d admissions during the upgrade", time.Since(upStart).Round(time.Millisecond), admitted)
		assert.Empty(t, failures, "no admission failed during the upgrade")
		assert.Greater(t, admitted, 20)

		after := readyPods(ctx, t, c, ns, "app.kubernetes.io/instance=contrast,app.kubernetes.io/component=webhook")
		require.Len(t, after, 2)
		for _, p := range after {
			assert.NotContains(t, before, p.Name, "the webhook was rolled")
			assert.Contains(t, p.Spec.Containers[0].Args, "--log-level=debug")
		}
		pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "contrast-coordinator-0", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, hash, pod.Annotations[policy.AnnotationPolicyHash], "the Coordinator was not restarted")
	})

	const ns2 = "contrast-b-system"
	t.Run("SecondReleaseDoesNotCollide", func(t *testing.T) {
		second := chart.MergeValues(chart.LocalValues(imgs, c.Registry(), fwd.Addr), map[string]any{
			"runtimeClass": map[string]any{"name": "contrast-cc-b"},
			"webhook": map[string]any{
				"replicas": 1,
				// null drops the default label (Helm merges maps).
				"namespaceSelector": map[string]any{"matchLabels": map[string]any{"contrast.cc/inject": nil, "contrast.cc/inject-b": "enabled"}},
			},
		})
		// its webhook's Initializers expect its own Coordinator
		second = chart.MergeValues(second, map[string]any{"coordinator": map[string]any{"referenceValues": refValues}})
		coord2 := coordinatorPolicyFromTemplate(ctx, t, h, dir, "contrast", ns2, second)
		second = chart.MergeValues(second, map[string]any{"coordinator": map[string]any{"policyHash": hex.EncodeToString(coord2.Digest)}})
		start := time.Now()
		_, err := chart.Install(ctx, h, dir, t.TempDir(), "contrast", ns2, second, 5*time.Minute)
		require.NoError(t, err)
		t.Logf("TIMING second helm install --wait in %s", time.Since(start).Round(time.Millisecond))
		coordinators := readyPods(ctx, t, c, ns2, "app.kubernetes.io/component=coordinator")
		require.Len(t, coordinators, 1)
		assert.Len(t, coordinators[0].Annotations[policy.AnnotationPolicyHash], 64, "the second Coordinator is admitted by its own webhook")

		c.Kubectl(t, "create", "namespace", "chart-apps-b")
		c.Kubectl(t, "label", "namespace", "chart-apps-b", "contrast.cc/inject-b=enabled")
		require.NoError(t, c.WaitForNamespaceReady(ctx, "chart-apps-b"))
		podB := applyPod(ctx, t, c, "chart-apps-b", "app", appRef, nil)
		assert.Equal(t, "contrast-cc-b", ptr.Deref(podB.Spec.RuntimeClassName, ""), "mutated by the second release")
		podA := applyPod(ctx, t, c, apps, "app-again", appRef, nil)
		assert.Equal(t, "contrast-cc", ptr.Deref(podA.Spec.RuntimeClassName, ""), "the first release still serves its namespaces")
	})

	t.Run("UninstallRemovesAllButHistory", func(t *testing.T) {
		objs := renderedObjects(t, rendered)
		require.NotEmpty(t, objs)
		start := time.Now()
		require.NoError(t, rel.Uninstall(ctx, 3*time.Minute))
		t.Logf("TIMING helm uninstall --wait in %s", time.Since(start).Round(time.Millisecond))
		for _, o := range objs {
			args := []string{"get", o.Kind + "/" + o.Name, "--ignore-not-found", "-o", "name"}
			if o.Namespaced {
				args = append(args, "-n", ns)
			}
			out, err := c.RunKubectl(ctx, nil, args...)
			require.NoError(t, err)
			assert.Empty(t, strings.TrimSpace(out), "%s %s is removed", o.Kind, o.Name)
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			pods, err := c.Pods(ctx, ns, "app.kubernetes.io/instance=contrast")
			return len(pods) == 0, err
		})
		require.NoError(t, err, "the release's pods are gone")
		cms, err := c.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "contrast.cc/history"})
		require.NoError(t, err)
		assert.NotEmpty(t, cms.Items, "the Coordinator's history ConfigMaps are kept")

		// The second release is untouched.
		assert.Len(t, readyPods(ctx, t, c, ns2, "app.kubernetes.io/component=webhook"), 1)
		_, err = c.Client.NodeV1().RuntimeClasses().Get(ctx, "contrast-cc-b", metav1.GetOptions{})
		require.NoError(t, err)
	})
	t.Run("CoordinatorHA", func(t *testing.T) {
		// A third release, after the first is gone: three Coordinators.
		testCoordinatorHAOnRealNode(ctx, t, &haNodeEnv{
			c: c, h: h, dir: dir, base: chart.LocalValues(imgs, c.Registry(), fwd.Addr), authPEM: authPEM,
			auth: auth, measurement: measurement, ref: ref, refValues: refValues,
		})
	})
	t.Logf("TIMING whole test %s", time.Since(testStart).Round(time.Millisecond))
}

// coordinatorPolicyFromTemplate renders the chart with values and computes
// the policy of the Coordinator's pod template as `contrast generate
// --settings` does: the rendered settings ConfigMap resolved by the shared
// injection settings, their Mutator over the decoded workload.
func coordinatorPolicyFromTemplate(ctx context.Context, t *testing.T, h *chart.Helm, dir, release, ns string, values map[string]any) *policy.Result {
	t.Helper()
	f, err := chart.WriteValues(t.TempDir(), "values.yaml", values)
	require.NoError(t, err)
	out, err := h.Template(ctx, dir, release, ns, []string{f})
	require.NoError(t, err)
	cm, err := chart.Object(out, "ConfigMap", "contrast-settings")
	require.NoError(t, err)
	resolved, err := loadSettings(t, cm).ResolveCoordinatorOnly()
	require.NoError(t, err)
	doc, err := chart.Object(out, "StatefulSet", "contrast-coordinator")
	require.NoError(t, err)
	ws, err := policy.DecodeWorkloads(doc)
	require.NoError(t, err)
	require.Len(t, ws, 1)
	m := resolved.Mutator(webhookimages.NewRegistry(resolved.Registry), slog.New(slog.DiscardHandler))
	res, err := m.MutateWorkload(ctx, &ws[0], nil)
	require.NoError(t, err)
	require.Len(t, res.Digest, 32)
	require.Equal(t, sha256.Sum256(res.InitData), [32]byte(res.Digest))
	return res
}

// setManifest sets a manifest whose coordinator entry is the Coordinator's
// policy, over the user API of the running Coordinator (its pod address),
// validating its simulated evidence as `contrast set` does.
// simReferenceValues are the reference values of the simulated SNP guest
// with measurement, signed by auth (any chip of it).
func simReferenceValues(t *testing.T, auth *sim.SNPAuthority, measurement []byte) snp.ReferenceValues {
	t.Helper()
	cfg := sim.DefaultSNPDeviceConfig()
	copy(cfg.Measurement[:], measurement)
	dev, err := auth.NewDevice(cfg)
	require.NoError(t, err)
	ref := dev.ReferenceValues()
	ref.AllowedChipIDs = nil
	return ref
}

func setManifest(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string, ref snp.ReferenceValues, coord *policy.Result) []byte {
	t.Helper()
	m := &manifest.Manifest{
		Policies: map[manifest.HexString]manifest.PolicyEntry{
			manifest.NewHexString(coord.Digest): {SANs: []string{"coordinator"}, Role: manifest.RoleCoordinator},
		},
		ReferenceValues:       manifest.ReferenceValues{SNP: []snp.ReferenceValues{ref}},
		WorkloadOwnerPubKeys:  []manifest.HexString{coordinatortest.PubHex(&chartOwnerKey().PublicKey)},
		SeedshareOwnerPubKeys: []manifest.HexString{coordinatortest.PubHex(&coordinatortest.SeedShareKey().PublicKey)},
	}
	return setManifestRequest(ctx, t, c, ns, ref, &userpb.SetManifestRequest{Manifest: coordinatortest.JSON(m), Policies: [][]byte{coord.InitData}})
}

// applyPod applies a pod of image in ns with labels and returns it as admitted.
func applyPod(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, name, image string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: "app", Image: image, Args: []string{"serve"}}},
		},
	}
	b, err := yaml.Marshal(p)
	require.NoError(t, err)
	out, err := c.RunKubectl(ctx, strings.NewReader(string(b)), "-n", ns, "apply", "-o", "yaml", "-f", "-")
	require.NoError(t, err, out)
	var got corev1.Pod
	require.NoError(t, yaml.Unmarshal([]byte(out), &got))
	return &got
}

// readyPods waits until the pods of selector in ns are Ready and returns them.
func readyPods(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, selector string) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		if pods, err = c.Pods(ctx, ns, selector); err != nil || len(pods) == 0 {
			return false, err
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || !podReady(&p) {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "pods %s in %s are Ready", selector, ns)
	return pods
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podNames(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, selector string) []string {
	t.Helper()
	pods, err := c.Pods(ctx, ns, selector)
	require.NoError(t, err)
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func runtimeClassHandler(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) *string {
	t.Helper()
	rc, err := c.Client.NodeV1().RuntimeClasses().Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return &rc.Handler
}

type renderedObject struct {
	Kind, Name string
	Namespaced bool
}

// renderedObjects lists the objects of a release's manifests.
func renderedObjects(t *testing.T, rendered string) []renderedObject {
	t.Helper()
	clusterScoped := map[string]bool{
		"ClusterRole": true, "ClusterRoleBinding": true, "MutatingWebhookConfiguration": true,
		"ValidatingWebhookConfiguration": true, "RuntimeClass": true, "PriorityClass": true,
	}
	var out []renderedObject
	for _, doc := range strings.Split(rendered, "\n---\n") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head))
		if head.Kind == "" {
			continue
		}
		out = append(out, renderedObject{Kind: head.Kind, Name: head.Metadata.Name, Namespaced: !clusterScoped[head.Kind]})
	}
	return out
}
