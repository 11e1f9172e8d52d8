package integration_test

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// podCreateRules selects pod creation, the only admission the webhook
// handles.
var podCreateRules = []admissionregistrationv1.RuleWithOperations{{
	Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
	Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
}}

// optedInNamespaceLabels marks a namespace opted in to injection.
var optedInNamespaceLabels = map[string]string{inject.LabelInject: "enabled"}

// contrastNamespaceSelector is the Helm chart's namespace selector: opted-in
// namespaces only, never kube-system or the webhook's namespace.
var contrastNamespaceSelector = &metav1.LabelSelector{
	MatchLabels: optedInNamespaceLabels,
	MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "contrast-system"},
	}},
}

// createRuntimeClass creates the RuntimeClass the webhook sets on the pods
// it injects; without it the API server rejects them.
func createRuntimeClass(ctx context.Context, t testing.TB, c *cluster.Cluster) {
	t.Helper()
	_, err := c.Client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: inject.DefaultRuntimeClassName},
		Handler:    "contrast-cc",
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// createOptedInNamespace creates namespace name labeled for injection and
// waits until pods can be created in it.
func createOptedInNamespace(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	c.Kubectl(t, "create", "namespace", name)
	c.Kubectl(t, "label", "namespace", name, inject.LabelInject+"=enabled")
	require.NoError(t, c.WaitForNamespaceReady(ctx, name))
}

// registerWebhook registers the mutating endpoint of the webhook (url,
// verified with caBundle) as the Helm chart does: contrastNamespaceSelector,
// opted-out pods skipped by the API server, failurePolicy Fail.
func registerWebhook(ctx context.Context, t testing.TB, c *cluster.Cluster, url string, caBundle []byte) {
	t.Helper()
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.contrast.cc",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			TimeoutSeconds:          ptr.To[int32](20),
			Rules:                   podCreateRules,
			NamespaceSelector:       contrastNamespaceSelector,
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: inject.LabelInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"},
			}}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// registerValidatingWebhook registers the validating endpoint of the
// webhook (url, verified with caBundle) for the same pods as
// registerWebhook, but without the objectSelector: the webhook itself lets
// opted-out pods without its annotations pass, and a later webhook cannot
// escape validation by adding the opt-out label. The registration is the
// one documented for the webhook binary.
func registerValidatingWebhook(ctx context.Context, t testing.TB, c *cluster.Cluster, url string, caBundle []byte) {
	t.Helper()
	_, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "validate.pods.contrast.cc",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](20),
			Rules:                   podCreateRules,
			NamespaceSelector:       contrastNamespaceSelector,
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// validations returns contrast_webhook_validations_total by result of the
// in-process webhook.
func validations(t *testing.T, wh *webhooktest.Webhook) map[string]float64 {
	t.Helper()
	mfs, err := wh.Registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "contrast_webhook_validations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// Environment variables of the mesh proxy (initializer/meshconfig).
var meshEnv = []string{"CONTRAST_SERVICEMESH_INGRESS", "CONTRAST_SERVICEMESH_EGRESS", "CONTRAST_SERVICEMESH_ADMIN_PORT"}

// proxyEnv returns the mesh variables of the proxy container.
func proxyEnv(t *testing.T, pod *corev1.Pod) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range pod.Spec.InitContainers {
		if c.Name != inject.ProxyName {
			continue
		}
		for _, e := range c.Env {
			if slices.Contains(meshEnv, e.Name) {
				out[e.Name] = e.Value
			}
		}
		return out
	}
	t.Fatalf("pod %s has no %s container", pod.Name, inject.ProxyName)
	return nil
}

var digestRef = regexp.MustCompile(`^[a-z0-9.:/-]+@sha256:[0-9a-f]{64}$`)

// TestWebhookAdmitsEmojivoto registers the in-process webhook with the real
// control plane, applies the unmodified emojivoto manifests with the real
// kubectl, and checks every pod the controllers create: runtime class,
// images pinned, Initializer and mesh sidecar injected, and a policy hash
// equal to the one computed from the YAML (what contrast generate puts into
// the manifest). Images come from a real docker-registry reached through the
// registry-mirror setting. The validating endpoint is registered too and
// must let every one of these pods through.
func TestWebhookAdmitsEmojivoto(t *testing.T) {
	imgs, _ := injecttest.ServeDockerRegistry(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)
	registerValidatingWebhook(ctx, t, c, wh.ValidateURL, wh.CABundle)

	createOptedInNamespace(ctx, t, c, "emojivoto")
	// kubectl apply -f of the unmodified files (-f on the folder would also
	// read kustomization.yml, which is not a Kubernetes object).
	args := []string{"apply"}
	for _, f := range []string{"ns.yml", "web.yml", "emoji.yml", "voting.yml", "vote-bot.yml"} {
		args = append(args, "-f", filepath.Join(emojivotoDir(t), f))
	}
	c.Kubectl(t, args...)

	var workloads []policy.Workload
	for _, f := range []string{"web.yml", "emoji.yml", "voting.yml", "vote-bot.yml"} {
		workloads = append(workloads, decode(t, filepath.Join(emojivotoDir(t), f))...)
	}
	require.Len(t, workloads, 4)
	for _, w := range workloads {
		t.Run(w.Name, func(t *testing.T) {
			// the YAML side: the same injection on the unmodified template
			yamlSide := w
			yamlSide.Template = *w.Template.DeepCopy()
			want, err := wh.Mutator.MutateWorkload(ctx, &yamlSide, nil)
			require.NoError(t, err)

			pod := waitForPodOf(ctx, t, c, w)
			assert.Equal(t, inject.DefaultRuntimeClassName, ptr.Deref(pod.Spec.RuntimeClassName, ""))
			require.GreaterOrEqual(t, len(pod.Spec.InitContainers), 2)
			assert.Equal(t, inject.InitializerName, pod.Spec.InitContainers[0].Name)
			assert.Equal(t, imgs.InitializerImage, pod.Spec.InitContainers[0].Image)
			assert.Equal(t, inject.ProxyName, pod.Spec.InitContainers[1].Name)
			assert.Equal(t, imgs.ProxyImage, pod.Spec.InitContainers[1].Image, "the configured proxy image, by digest")
			assert.Equal(t, corev1.ContainerRestartPolicyAlways, ptr.Deref(pod.Spec.InitContainers[1].RestartPolicy, ""))
			// emojivoto has no mesh annotations: the proxy gets no mesh
			// configuration (the subtest below gives it one)
			for k := range pod.Annotations {
				require.NotContains(t, k, "servicemesh", "the YAML gained mesh annotations: update this test")
			}
			assert.Empty(t, proxyEnv(t, pod))
			for _, ctr := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
				assert.Regexp(t, digestRef, ctr.Image, "container %s", ctr.Name)
			}
			hasVolume := false
			for _, v := range pod.Spec.Volumes {
				hasVolume = hasVolume || (v.Name == inject.VolumeName && v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory)
			}
			assert.True(t, hasVolume, "memory-backed volume at /contrast")
			assert.NotEmpty(t, pod.Annotations[policy.AnnotationInitData])
			assert.Equal(t, want.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash],
				"the admitted pod's policy hash must equal the one computed from the YAML")

			// the policy annotation of the stored pod is the policy of the stored pod
			again, err := policy.Generate(ctx, policy.GenerateInput{Pod: pod, Images: imgs.Source})
			require.NoError(t, err)
			assert.Equal(t, pod.Annotations[policy.AnnotationPolicyHash], again.Annotations[policy.AnnotationPolicyHash])
		})
	}

	t.Run("mesh annotations reach the proxy in canonical form", func(t *testing.T) {
		doc := `apiVersion: v1
kind: Pod
metadata:
  name: meshed
  namespace: emojivoto
  annotations:
    contrast.cc/servicemesh-ingress: "web#8080#false##metrics#9090#true"
    contrast.edgeless.systems/servicemesh-egress: "emoji#127.137.0.1:8081#emoji-svc.emojivoto:8080"
    contrast.cc/servicemesh-admin-port: "9901"
spec:
  containers:
  - name: app
    image: docker.l5d.io/buoyantio/emojivoto-web:v11
`
		apply(ctx, t, c, "emojivoto", doc)
		pod, err := c.Client.CoreV1().Pods("emojivoto").Get(ctx, "meshed", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, imgs.ProxyImage, pod.Spec.InitContainers[1].Image)
		assert.Equal(t, map[string]string{
			"CONTRAST_SERVICEMESH_INGRESS":    "web#8080#false##metrics#9090#true",
			"CONTRAST_SERVICEMESH_EGRESS":     "emoji#127.137.0.1:8081#emoji-svc.emojivoto:8080", // from the legacy alias
			"CONTRAST_SERVICEMESH_ADMIN_PORT": "9901",
		}, proxyEnv(t, pod))
	})
	t.Run("unlabelled namespace is untouched", func(t *testing.T) {
		c.Kubectl(t, "create", "namespace", "plain")
		require.NoError(t, c.WaitForNamespaceReady(ctx, "plain"))
		apply(ctx, t, c, "plain", plainPod("plain", "p", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil))
		pod, err := c.Client.CoreV1().Pods("plain").Get(ctx, "p", metav1.GetOptions{})
		require.NoError(t, err)
		assertUntouched(t, pod)
	})
	t.Run("opted-out pod is untouched", func(t *testing.T) {
		apply(ctx, t, c, "emojivoto", plainPod("emojivoto", "opted-out", "docker.l5d.io/buoyantio/emojivoto-web:v11", map[string]string{inject.LabelInject: "disabled"}))
		pod, err := c.Client.CoreV1().Pods("emojivoto").Get(ctx, "opted-out", metav1.GetOptions{})
		require.NoError(t, err)
		assertUntouched(t, pod)
	})
	t.Run("unresolvable image is denied naming the image", func(t *testing.T) {
		out, err := c.RunKubectl(ctx, strings.NewReader(plainPod("emojivoto", "missing", "docker.l5d.io/buoyantio/emojivoto-web:v404", nil)), "apply", "-f", "-")
		require.Error(t, err)
		assert.Contains(t, err.Error()+out, `"docker.l5d.io/buoyantio/emojivoto-web:v404"`)
		assert.Contains(t, err.Error()+out, "denied the request")
	})
	t.Run("server dry run returns the mutated pod without creating it", func(t *testing.T) {
		out, err := c.RunKubectl(ctx, strings.NewReader(plainPod("emojivoto", "dry", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)), "apply", "--dry-run=server", "-o", "yaml", "-f", "-")
		require.NoError(t, err)
		var pod corev1.Pod
		require.NoError(t, yaml.Unmarshal([]byte(out), &pod))
		assert.Equal(t, inject.DefaultRuntimeClassName, ptr.Deref(pod.Spec.RuntimeClassName, ""))
		assert.NotEmpty(t, pod.Annotations[policy.AnnotationPolicyHash])
		_, err = c.Client.CoreV1().Pods("emojivoto").Get(ctx, "dry", metav1.GetOptions{})
		assert.True(t, err != nil && strings.Contains(err.Error(), "not found"), "dry run created the pod: %v", err)
	})

	// every pod created above passed the validating webhook, none was denied
	got := validations(t, wh)
	assert.Positive(t, got["allowed"], "validations: %v", got)
	assert.Zero(t, got["denied"], "validations: %v", got)
	assert.Zero(t, got["error"], "validations: %v", got)
}

func plainPod(ns, name, image string, labels map[string]string) string {
	var l strings.Builder
	for k, v := range labels {
		l.WriteString("\n    " + k + ": " + v)
	}
	labelBlock := ""
	if l.Len() > 0 {
		labelBlock = "\n  labels:" + l.String()
	}
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns + labelBlock +
		"\nspec:\n  containers:\n  - name: app\n    image: " + image + "\n"
}

func assertUntouched(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	assert.Nil(t, pod.Spec.RuntimeClassName)
	assert.Empty(t, pod.Spec.InitContainers)
	assert.NotContains(t, pod.Annotations, policy.AnnotationPolicyHash)
	assert.NotContains(t, pod.Annotations, inject.AnnotationInjected)
	assert.Equal(t, "docker.l5d.io/buoyantio/emojivoto-web:v11", pod.Spec.Containers[0].Image)
}
