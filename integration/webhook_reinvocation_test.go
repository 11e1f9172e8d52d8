package integration_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
func otherWebhook(t *testing.T) *httptest.Server {
	t.Helper()
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
		patch := `[{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"LATE_ADDITION","value":"from-another-webhook"}}]`
		ar.Response = &admissionv1.AdmissionResponse{
			UID: ar.Request.UID, Allowed: true, Patch: []byte(patch), PatchType: ptr.To(admissionv1.PatchTypeJSONPatch),
		}
		ar.Request = nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ar)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebhookReinvocationCatchesLaterMutation registers a second webhook
// that mutates pods after Contrast's. With reinvocationPolicy IfNeeded the
// API server calls Contrast's webhook again, which strips its injection and
// recomputes the policy, so the stored pod's policy covers the late change.
func TestWebhookReinvocationCatchesLaterMutation(t *testing.T) {
	imgs := injecttest.Serve(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	registerWebhook(ctx, t, c, wh)

	other := otherWebhook(t)
	otherURL := other.URL + "/mutate"
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-other-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.other.example",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &otherURL, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{inject.LabelInject: "enabled"}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	c.Kubectl(t, "create", "namespace", "demo")
	c.Kubectl(t, "label", "namespace", "demo", inject.LabelInject+"=enabled")
	require.NoError(t, c.WaitForNamespaceReady(ctx, "demo"))
	doc := plainPod("demo", "late", "docker.l5d.io/buoyantio/emojivoto-web:v11", nil) + "    env:\n    - name: WEB_PORT\n      value: \"8080\"\n"
	applyStdin(ctx, t, c, doc)

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
