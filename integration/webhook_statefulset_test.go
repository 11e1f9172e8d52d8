package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// registerStatefulSetWebhook registers the StatefulSet endpoint of the
// webhook (url, verified with caBundle) as the Helm chart does: CREATE and
// UPDATE of apps/v1 StatefulSets, contrastNamespaceSelector, no
// objectSelector, failurePolicy Fail.
func registerStatefulSetWebhook(ctx context.Context, t testing.TB, c *cluster.Cluster, url string, caBundle []byte) {
	t.Helper()
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook-statefulsets"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "statefulsets.contrast.cc",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](20),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"statefulsets"}},
			}},
			NamespaceSelector: contrastNamespaceSelector,
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// waitForClaim waits until the StatefulSet controller created claim name.
func waitForClaim(ctx context.Context, t *testing.T, c *cluster.Cluster, namespace, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	var pvc *corev1.PersistentVolumeClaim
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		pvc, err = c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	})
	require.NoError(t, err, "waiting for claim %s/%s", namespace, name)
	return pvc
}

// TestWebhookStatefulSetClaims applies the unmodified cassandra StatefulSet
// of ../shared/workloads-real (a volumeClaimTemplates entry, no volumeMode)
// with kubectl to an opted-in namespace of the real control plane, with the
// in-process webhook registered for pods and StatefulSets as the chart
// does. The stored StatefulSet's claim template asks for volumeMode Block
// (the API server had defaulted it to Filesystem), so does the claim the
// StatefulSet controller creates, and both equal what contrast generate
// writes; the pod the controller creates from the mutated template gets
// the policy hash contrast generate computes. A kubectl replace of the
// unmodified file (an UPDATE that the API server defaults back to
// Filesystem) is admitted: claim templates are immutable. The same
// StatefulSet with its volume named in contrast.cc/host-shared-volumes
// keeps a Filesystem claim, and its pod also gets generate's hash.
func TestWebhookStatefulSetClaims(t *testing.T) {
	file := filepath.Join(shareddata.Dir(t, shareddata.RealWorld), "cassandra", "cassandra-statefulset.yaml")
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	// the same StatefulSet under another name, with its claim host-shared
	sharedYAML := strings.Replace(strings.Replace(string(raw), "  name: cassandra\n", "  name: cassandra-shared\n", 1),
		"    metadata:\n      labels:\n        app: cassandra\n",
		"    metadata:\n      labels:\n        app: cassandra\n      annotations:\n        "+inject.AnnotationHostSharedVolumes+": cassandra-data\n", 1)
	require.Contains(t, sharedYAML, inject.AnnotationHostSharedVolumes)
	sharedYAML = strings.ReplaceAll(sharedYAML, "app: cassandra\n", "app: cassandra-shared\n")
	sharedFile := filepath.Join(t.TempDir(), "cassandra-shared.yaml")
	require.NoError(t, os.WriteFile(sharedFile, []byte(sharedYAML), 0o600))

	const ns = "cassandra"
	decodeSets := func(b []byte) []policy.Workload {
		ws, err := policy.DecodeWorkloads(b)
		require.NoError(t, err)
		for i := range ws {
			ws[i].Namespace = ns
		}
		require.Len(t, ws, 1)
		return ws
	}
	workloads := append(decodeSets(raw), decodeSets([]byte(sharedYAML))...)
	var corpus []corpusWorkload
	for _, w := range workloads {
		corpus = append(corpus, corpusWorkload{dir: ns, w: w})
	}
	specs, hosts := standIns(t, corpus)
	imgs := injecttest.ServeWith(t, specs, hosts)

	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)
	registerValidatingWebhook(ctx, t, c, wh.ValidateURL, wh.CABundle)
	registerStatefulSetWebhook(ctx, t, c, wh.StatefulSetURL, wh.CABundle)
	createOptedInNamespace(ctx, t, c, ns)

	c.Kubectl(t, "apply", "-n", ns, "-f", file)
	c.Kubectl(t, "apply", "-n", ns, "-f", sharedFile)

	for _, tc := range []struct {
		w        policy.Workload
		wantMode corev1.PersistentVolumeMode
	}{
		{workloads[0], corev1.PersistentVolumeBlock},
		{workloads[1], corev1.PersistentVolumeFilesystem},
	} {
		t.Run(tc.w.Name, func(t *testing.T) {
			// the YAML side: contrast generate's mutation of the unmodified
			// StatefulSet
			yamlSide := tc.w
			yamlSide.Template = *tc.w.Template.DeepCopy()
			generated := tc.w.Object.(*appsv1.StatefulSet).DeepCopy()
			yamlSide.Object = generated
			want, err := wh.Mutator.MutateWorkload(ctx, &yamlSide, nil)
			require.NoError(t, err)

			st, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, tc.w.Name, metav1.GetOptions{})
			require.NoError(t, err)
			require.Len(t, st.Spec.VolumeClaimTemplates, 1)
			assert.Equal(t, tc.wantMode, ptr.Deref(st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode, ""), "stored claim template")
			if tc.wantMode == corev1.PersistentVolumeBlock {
				assert.Equal(t, generated.Spec.VolumeClaimTemplates[0].Spec.VolumeMode, st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode,
					"the webhook's claim template is the one contrast generate writes")
			}
			pvc := waitForClaim(ctx, t, c, ns, "cassandra-data-"+tc.w.Name+"-0")
			assert.Equal(t, tc.wantMode, ptr.Deref(pvc.Spec.VolumeMode, ""), "claim created by the StatefulSet controller")

			pod := waitForPodOf(ctx, t, c, tc.w)
			assert.Equal(t, tc.w.Name+"-0", pod.Name)
			assert.Equal(t, want.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash],
				"the pod of the mutated template must get contrast generate's policy hash")
			var devices []corev1.VolumeDevice
			for _, ic := range pod.Spec.InitContainers {
				if ic.Name == inject.InitializerName {
					devices = ic.VolumeDevices
				}
			}
			if tc.wantMode == corev1.PersistentVolumeBlock {
				assert.Equal(t, []corev1.VolumeDevice{{Name: "cassandra-data", DevicePath: "/dev/contrast-pv/cassandra-data"}}, devices)
			} else {
				assert.Empty(t, devices, "host-shared: mounted by the kubelet")
			}
		})
	}

	// kubectl replace of the unmodified file: an UPDATE whose claim
	// template the API server defaulted to Filesystem again
	c.Kubectl(t, "replace", "-n", ns, "-f", file)
	st, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "cassandra", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, corev1.PersistentVolumeBlock, ptr.Deref(st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode, ""))

	mutated := 0.0
	mfs, err := wh.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "contrast_webhook_statefulset_admissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "mutated" {
					mutated += m.GetCounter().GetValue()
				}
			}
		}
	}
	assert.InDelta(t, 2, mutated, 0, "the create and the replace of cassandra")
}
