package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// mutated returns pod as the mutating webhook leaves it.
func mutated(t *testing.T, f *fixture, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	code, resp := post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed, "%v", resp.Result)
	return applyPatch(t, pod, resp)
}

// TestValidationAllows: what the mutating webhook produced, and changes
// the policy does not cover, pass.
func TestValidationAllows(t *testing.T) {
	imgs := injecttest.Serve(t)
	testCases := map[string]struct {
		pod    func() *corev1.Pod
		after  func(*corev1.Pod)
		result string
		reason string
	}{
		"mutated pod":            {pod: webPod, result: ResultAllowed, reason: "ok"},
		"label added later":      {pod: webPod, after: func(p *corev1.Pod) { p.Labels["team"] = "emoji" }, result: ResultAllowed, reason: "ok"},
		"annotation added later": {pod: webPod, after: func(p *corev1.Pod) { p.Annotations["example.com/owner"] = "team" }, result: ResultAllowed, reason: "ok"},
		"coordinator pod (no injection record)": {
			pod: func() *corev1.Pod {
				p := webPod()
				p.Annotations = map[string]string{inject.AnnotationPodRole: inject.RoleCoordinator}
				return p
			},
			result: ResultAllowed, reason: "ok",
		},
		"opted-out pod": {
			pod: func() *corev1.Pod {
				p := webPod()
				p.Labels[inject.LabelInject] = "disabled"
				return p
			},
			result: ResultSkipped, reason: "opted-out",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			pod := mutated(t, f, tc.pod())
			if tc.after != nil {
				tc.after(pod)
			}
			code, resp := postTo(t, f.handler, ValidatePath, review(t, admissionv1.Create, "emojivoto", pod, false))
			require.Equal(t, http.StatusOK, code)
			assert.True(t, resp.Allowed, "%v", resp.Result)
			assert.Empty(t, resp.Patch)
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.validations.WithLabelValues(tc.result, tc.reason)), 0)
		})
	}
}

// TestValidationDenies: a pod changed after the mutating webhook's last
// invocation (by a webhook that mutates again when reinvoked), or never
// mutated, is denied, naming the changed fields and never their values.
func TestValidationDenies(t *testing.T) {
	imgs := injecttest.Serve(t)
	const secret = "s3cr3t-v4lu3"
	testCases := map[string]struct {
		pod     *corev1.Pod // default: the mutated web pod
		after   func(*corev1.Pod)
		reason  string
		message []string
	}{
		"variable added": {
			after: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "LATE_ADDITION", Value: secret})
			},
			reason:  "policy-mismatch",
			message: []string{"spec.containers[0].env[4]"},
		},
		"variable changed": {
			after:   func(p *corev1.Pod) { p.Spec.Containers[0].Env[1].Value = secret },
			reason:  "policy-mismatch",
			message: []string{"spec.containers[0].env[1]"},
		},
		"command changed": {
			after:   func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"--token", secret} },
			reason:  "policy-mismatch",
			message: []string{"spec.containers[0].{command,args}"},
		},
		"container added": {
			after: func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: p.Spec.Containers[0].Image})
			},
			reason:  "policy-mismatch",
			message: []string{"spec.containers[1] (added)"},
		},
		"initializer removed": {
			after:   func(p *corev1.Pod) { p.Spec.InitContainers = p.Spec.InitContainers[1:] },
			reason:  "policy-mismatch",
			message: []string{"spec.initContainers"},
		},
		"runtime class removed": {
			after:   func(p *corev1.Pod) { p.Spec.RuntimeClassName = nil },
			reason:  "policy-mismatch",
			message: []string{"spec.runtimeClassName"},
		},
		"runtime class replaced": {
			after:   func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr.To("runc") },
			reason:  "runtime-class",
			message: []string{"the final pod, after every mutating webhook", "spec.runtimeClassName"},
		},
		"host network set": {
			after:   func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			reason:  "host-namespace",
			message: []string{"spec.hostNetwork"},
		},
		"policy hash edited": {
			after:   func(p *corev1.Pod) { p.Annotations[policy.AnnotationPolicyHash] = strings.Repeat("0", 64) },
			reason:  "policy-mismatch",
			message: []string{"metadata.annotations[" + policy.AnnotationPolicyHash + "]"},
		},
		"not mutated": {
			pod:     webPod(),
			reason:  "not-mutated",
			message: []string{"metadata.annotations[" + policy.AnnotationPolicyHash + "]: missing"},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			pod := tc.pod
			if pod == nil {
				pod = mutated(t, f, webPod())
			}
			if tc.after != nil {
				tc.after(pod)
			}
			code, resp := postTo(t, f.handler, ValidatePath, review(t, admissionv1.Create, "emojivoto", pod, false))
			require.Equal(t, http.StatusOK, code)
			assert.False(t, resp.Allowed)
			require.NotNil(t, resp.Result)
			t.Log(resp.Result.Message)
			assert.True(t, strings.HasPrefix(resp.Result.Message, "contrast: "), resp.Result.Message)
			for _, m := range tc.message {
				assert.Contains(t, resp.Result.Message, m)
			}
			assert.NotContains(t, resp.Result.Message, secret)
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.validations.WithLabelValues(ResultDenied, tc.reason)), 0)

			// the mutating webhook's reinvocation would have made it whole
			if tc.reason == "policy-mismatch" && name != "runtime class removed" && name != "initializer removed" && name != "policy hash edited" {
				again := mutated(t, f, pod)
				code, resp = postTo(t, f.handler, ValidatePath, review(t, admissionv1.Create, "emojivoto", again, false))
				require.Equal(t, http.StatusOK, code)
				assert.True(t, resp.Allowed, "%v", resp.Result)
			}
		})
	}
}

// TestValidationSkips: requests the mutating webhook skips are skipped.
func TestValidationSkips(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		op        admissionv1.Operation
		namespace string
		reason    string
	}{
		{admissionv1.Update, "emojivoto", "operation"},
		{admissionv1.Create, "kube-system", "excluded-namespace"},
	} {
		code, resp := postTo(t, f.handler, ValidatePath, review(t, tc.op, tc.namespace, webPod(), false))
		require.Equal(t, http.StatusOK, code)
		assert.True(t, resp.Allowed)
		assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.validations.WithLabelValues(ResultSkipped, tc.reason)), 0, tc.reason)
	}
}

// TestValidationReusesMutation: the validating webhook's recomputation of
// the pod the mutating webhook produced, after the API server named it, is
// a policy cache hit (no second generation), and so is the next replica.
func TestValidationReusesMutation(t *testing.T) {
	f := newFixture(t)
	lookups := func(result string) float64 {
		return testutil.ToFloat64(f.metrics.policyCache.requests.WithLabelValues(result))
	}
	pod := mutated(t, f, webPod())
	require.InDelta(t, 1, lookups("miss"), 0)
	require.InDelta(t, 0, lookups("hit"), 0)

	// the API server generates the name and sets the UID after mutating
	// admission, before validating admission
	pod.Name = pod.GenerateName + "x7k2q"
	pod.UID = "2f1c7a9e-0000-4000-8000-00000000000a"
	code, resp := postTo(t, f.handler, ValidatePath, review(t, admissionv1.Create, "emojivoto", pod, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.InDelta(t, 1, lookups("miss"), 0, "no second generation")
	assert.InDelta(t, 1, lookups("hit"), 0)

	mutated(t, f, webPod())
	assert.InDelta(t, 1, lookups("miss"), 0)
	assert.InDelta(t, 2, lookups("hit"), 0, "the next replica")
	assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.policyCache.entries), 0)
	assert.Positive(t, testutil.ToFloat64(f.metrics.policyCache.bytes))
}
