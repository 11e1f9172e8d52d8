package integration_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// otherWebhook is another mutating webhook that runs after Contrast's (its
// configuration name sorts later) and appends a variable to the first
// container: what a service mesh or monitoring agent injector might do.
// With everyCall it appends one on every call, reinvocations included,
// numbering them (LATE_ADDITION_1, _2, ...); otherwise only on a pod that
// does not have it yet. It counts its calls.
func otherWebhook(t *testing.T, everyCall bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &ar); err != nil || ar.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(ar.Request.Object.Raw, &pod); err != nil || len(pod.Spec.Containers) == 0 {
			http.Error(w, "not a pod", http.StatusBadRequest)
			return
		}
		n := calls.Add(1)
		name := "LATE_ADDITION"
		if everyCall {
			name = fmt.Sprintf("LATE_ADDITION_%d", n)
		}
		resp := &admissionv1.AdmissionResponse{UID: ar.Request.UID, Allowed: true}
		if !slices.ContainsFunc(pod.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == name }) {
			op := `{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"` + name + `","value":"from-another-webhook"}}`
			if len(pod.Spec.Containers[0].Env) == 0 {
				op = `{"op":"add","path":"/spec/containers/0/env","value":[{"name":"` + name + `","value":"from-another-webhook"}]}`
			}
			resp.Patch, resp.PatchType = []byte("["+op+"]"), ptr.To(admissionv1.PatchTypeJSONPatch)
		}
		ar.Response, ar.Request = resp, nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ar)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// registerOtherWebhook registers srv for pods in opted-in namespaces, after
// Contrast's webhook, reinvoked if needed.
func registerOtherWebhook(ctx context.Context, t *testing.T, c *cluster.Cluster, srv *httptest.Server) {
	t.Helper()
	url := srv.URL + "/mutate"
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-other-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.other.example",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			Rules:                   podCreateRules,
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: optedInNamespaceLabels},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestWebhookReinvocationCatchesLaterMutation registers a second webhook
// that mutates pods after Contrast's. With reinvocationPolicy IfNeeded the
// API server calls Contrast's webhook again, which strips its injection and
// recomputes the policy, so the stored pod's policy covers the late change
// (and the validating webhook, registered too, lets it through).
func TestWebhookReinvocationCatchesLaterMutation(t *testing.T) {
	imgs := injecttest.Serve(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)

	registerValidatingWebhook(ctx, t, c, wh.ValidateURL, wh.CABundle)
	other, _ := otherWebhook(t, false)
	registerOtherWebhook(ctx, t, c, other)

	createOptedInNamespace(ctx, t, c, "demo")
	doc := plainPod("demo", "late", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil) + "    env:\n    - name: WEB_PORT\n      value: \"8080\"\n"
	apply(ctx, t, c, "demo", doc)

	pod, err := c.Client.CoreV1().Pods("demo").Get(ctx, "late", metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, pod.Spec.Containers[0].Env, corev1.EnvVar{Name: "LATE_ADDITION", Value: "from-another-webhook"}, "the other webhook ran")
	require.Equal(t, inject.InitializerName, pod.Spec.InitContainers[0].Name)
	assert.Len(t, pod.Spec.InitContainers, 2, "re-invocation must not inject twice")

	stored, err := policy.Generate(ctx, policy.GenerateInput{Pod: pod, Images: imgs.Source})
	require.NoError(t, err)
	assert.Equal(t, stored.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash],
		"the policy annotation must describe the final pod, including the later mutation")

	withoutLate := pod.DeepCopy()
	withoutLate.Spec.Containers[0].Env = withoutLate.Spec.Containers[0].Env[:1]
	before, err := policy.Generate(ctx, policy.GenerateInput{Pod: withoutLate, Images: imgs.Source})
	require.NoError(t, err)
	assert.NotEqual(t, before.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash])
}

// TestWebhookValidationCatchesMutationInReinvocation: the API server
// reinvokes each webhook at most once. A second webhook that mutates the pod
// on every call, its own reinvocation included, changes the pod after
// Contrast's reinvocation recomputed the policy. Without the validating
// webhook such a pod is stored with a policy that does not describe it;
// with it, the pod is denied, naming the changed field.
func TestWebhookValidationCatchesMutationInReinvocation(t *testing.T) {
	imgs := injecttest.Serve(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)
	other, calls := otherWebhook(t, true)
	registerOtherWebhook(ctx, t, c, other)

	createOptedInNamespace(ctx, t, c, "demo")

	// without the validating webhook: stored with a stale policy
	apply(ctx, t, c, "demo", plainPod("demo", "stale", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil))
	pod, err := c.Client.CoreV1().Pods("demo").Get(ctx, "stale", metav1.GetOptions{})
	require.NoError(t, err)
	t.Logf("the other webhook was called %d times for one pod", calls.Load())
	require.Equal(t, int32(2), calls.Load(), "called once and reinvoked once")
	require.Len(t, pod.Spec.Containers[0].Env, 2, "mutated on its call and on its reinvocation")
	stored, err := policy.Generate(ctx, policy.GenerateInput{Pod: pod, Images: imgs.Source})
	require.NoError(t, err)
	require.NotEqual(t, stored.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash],
		"the policy annotation does not describe the stored pod: the gap the validating webhook closes")

	// with it: denied, naming the field and not its value
	registerValidatingWebhook(ctx, t, c, wh.ValidateURL, wh.CABundle)
	var out string
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		// the API server picks up the new configuration asynchronously
		out, err = c.RunKubectl(ctx, strings.NewReader(plainPod("demo", "caught", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)), "create", "-f", "-")
		if err == nil {
			_ = c.Client.CoreV1().Pods("demo").Delete(ctx, "caught", metav1.DeleteOptions{})
			return false, nil
		}
		out += err.Error()
		return true, nil
	}))
	assert.Contains(t, out, "denied the request")
	assert.Contains(t, out, "validate.pods.contrast.cc")
	assert.Contains(t, out, "spec.containers[0].env[1]")
	assert.NotContains(t, out, "from-another-webhook")
	_, err = c.Client.CoreV1().Pods("demo").Get(ctx, "caught", metav1.GetOptions{})
	assert.True(t, err != nil && strings.Contains(err.Error(), "not found"), "the pod was stored: %v", err)
	got := validations(t, wh)
	assert.Positive(t, got["denied"], "validations: %v", got)
}
