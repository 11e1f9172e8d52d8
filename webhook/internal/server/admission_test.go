package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

type fixture struct {
	handler http.Handler
	metrics *Metrics
	mutator *inject.Mutator
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return fixtureOn(t, injecttest.Serve(t))
}

// fixtureOn is newFixture on images already served: the table tests share
// one registry (building its images is what takes time) and get fresh
// metrics and caches per case.
func fixtureOn(t testing.TB, imgs *injecttest.Images) *fixture {
	t.Helper()
	metrics := NewMetrics(prometheus.NewPedanticRegistry())
	cfg := inject.Config{
		InitializerImage: imgs.InitializerImage, ProxyImage: imgs.ProxyImage, CoordinatorAddress: "coordinator:7777",
		Platform: attest.PlatformSNP, CoordinatorPolicyHashes: [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	require.NoError(t, cfg.Validate())
	m := &inject.Mutator{Config: cfg, Images: NewCachingSource(imgs.Source, metrics),
		Policies: policy.NewCache(policy.CacheConfig{Observer: metrics})}
	h, err := NewAdmissionHandler(AdmissionConfig{
		Mutator: m, Metrics: metrics, ExcludedNamespaces: []string{"kube-system", "contrast-system"}, CoordinatorNamespace: "contrast-system",
		Patches: NewPatchCache(PatchCacheConfig{Observer: metrics}),
	})
	require.NoError(t, err)
	return &fixture{handler: h, metrics: metrics, mutator: m}
}

// webPod is the pod the ReplicaSet controller of the emojivoto web
// Deployment sends to admission.
func webPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "web-7d9f8c6b5-",
			Namespace:    "emojivoto",
			Labels:       map[string]string{"app": "web-svc", "version": "v11", "pod-template-hash": "7d9f8c6b5"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5", UID: "1b7a3c2e-0000-4000-8000-000000000001", Controller: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			Containers: []corev1.Container{{
				Name:  "web-svc",
				Image: "docker.l5d.io/buoyantio/emojivoto-web:v11",
				Env: []corev1.EnvVar{
					{Name: "WEB_PORT", Value: "8080"},
					{Name: "EMOJISVC_HOST", Value: "emoji-svc.emojivoto:8080"},
					{Name: "VOTINGSVC_HOST", Value: "voting-svc.emojivoto:8080"},
					{Name: "INDEX_BUNDLE", Value: "dist/index_bundle.js"},
				},
				Ports:                    []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				TerminationMessagePath:   corev1.TerminationMessagePathDefault,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			}},
			RestartPolicy: corev1.RestartPolicyAlways,
			DNSPolicy:     corev1.DNSClusterFirst,
		},
	}
}

// review is an admission.k8s.io/v1 AdmissionReview of a pod as the API
// server sends it.
func review(t testing.TB, op admissionv1.Operation, namespace string, pod *corev1.Pod, dryRun bool) []byte {
	t.Helper()
	return reviewOf(t, op, namespace, metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, "", pod, dryRun)
}

// reviewOf is an admission.k8s.io/v1 AdmissionReview of any object.
func reviewOf(t testing.TB, op admissionv1.Operation, namespace string, kind metav1.GroupVersionKind, resource metav1.GroupVersionResource, subresource string, obj any, dryRun bool) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	require.NoError(t, err)
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:         "0d3a1c8e-5d0e-4f5a-9a57-3b2f3c4d5e6f",
			Kind:        kind,
			Resource:    resource,
			SubResource: subresource,
			Namespace:   namespace,
			Operation:   op,
			Object:      runtime.RawExtension{Raw: raw},
			DryRun:      ptr.To(dryRun),
		},
	}
	b, err := json.Marshal(ar)
	require.NoError(t, err)
	return b
}

func post(t *testing.T, h http.Handler, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	return postTo(t, h, MutatePath, body)
}

func postTo(t testing.TB, h http.Handler, path string, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if res.StatusCode != http.StatusOK {
		return res.StatusCode, nil
	}
	var ar admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(b, &ar), string(b))
	require.NotNil(t, ar.Response)
	assert.Equal(t, "0d3a1c8e-5d0e-4f5a-9a57-3b2f3c4d5e6f", string(ar.Response.UID))
	return res.StatusCode, ar.Response
}

func applyPatch(t testing.TB, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	if len(resp.Patch) > 0 {
		require.Equal(t, admissionv1.PatchTypeJSONPatch, ptr.Deref(resp.PatchType, ""))
		p, err := jsonpatch.DecodePatch(resp.Patch)
		require.NoError(t, err)
		raw, err = p.Apply(raw)
		require.NoError(t, err)
	}
	var out corev1.Pod
	require.NoError(t, json.Unmarshal(raw, &out))
	return &out
}

func TestAdmissionMutates(t *testing.T) {
	f := newFixture(t)
	pod := webPod()
	code, resp := post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	got := applyPatch(t, pod, resp)

	want, res, err := f.mutator.MutatePod(context.Background(), pod, nil)
	require.NoError(t, err)
	assert.Equal(t, want, got, "the patch must turn the admitted pod into the mutated pod")
	assert.Equal(t, "contrast-cc", ptr.Deref(got.Spec.RuntimeClassName, ""))
	require.Len(t, got.Spec.InitContainers, 2)
	assert.Equal(t, inject.InitializerName, got.Spec.InitContainers[0].Name)
	assert.Regexp(t, `^docker\.l5d\.io/buoyantio/emojivoto-web@sha256:[0-9a-f]{64}$`, got.Spec.Containers[0].Image)
	assert.Equal(t, res.Annotations[policy.AnnotationPolicyHash], got.Annotations[policy.AnnotationPolicyHash])
	assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultMutated, "ok")), 0)

	// A re-invocation of the mutated pod changes nothing.
	code, resp = post(t, f.handler, review(t, admissionv1.Create, "emojivoto", got, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	assert.Equal(t, got, applyPatch(t, got, resp))
	assert.Positive(t, testutil.ToFloat64(f.metrics.imageCache.WithLabelValues("hit")), "pinned images come from the cache")

	// A dry run returns the same mutated pod.
	code, resp = post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, true))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	assert.Equal(t, want, applyPatch(t, pod, resp))
}

func TestAdmissionSkips(t *testing.T) {
	imgs := injecttest.Serve(t)
	testCases := map[string]struct {
		op        admissionv1.Operation
		namespace string
		mutate    func(*corev1.Pod)
		reason    string
	}{
		"kube-system":       {op: admissionv1.Create, namespace: "kube-system", reason: "excluded-namespace"},
		"own namespace":     {op: admissionv1.Create, namespace: "contrast-system", reason: "excluded-namespace"},
		"update":            {op: admissionv1.Update, namespace: "emojivoto", reason: "operation"},
		"opted-out pod":     {op: admissionv1.Create, namespace: "emojivoto", mutate: func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "disabled" }, reason: "opted-out"},
		"hostNetwork in ks": {op: admissionv1.Create, namespace: "kube-system", mutate: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, reason: "excluded-namespace"},
		"coordinator in ks": {op: admissionv1.Create, namespace: "kube-system", mutate: asCoordinator, reason: "excluded-namespace"},
		"other pod role":    {op: admissionv1.Create, namespace: "contrast-system", mutate: func(p *corev1.Pod) { p.Annotations = map[string]string{inject.AnnotationPodRole: "worker"} }, reason: "excluded-namespace"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			pod := webPod()
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			code, resp := post(t, f.handler, review(t, tc.op, tc.namespace, pod, false))
			require.Equal(t, http.StatusOK, code)
			assert.True(t, resp.Allowed)
			assert.Equal(t, pod, applyPatch(t, pod, resp), "pod must be untouched")
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultSkipped, tc.reason)), 0)
		})
	}
}

func asCoordinator(p *corev1.Pod) {
	p.Annotations = map[string]string{inject.AnnotationPodRole: inject.RoleCoordinator}
}

// TestAdmissionCoordinatorInOwnNamespace: the webhook's own namespace is
// excluded, but the Coordinator of its Helm release runs there and gets
// its policy (runtime class and policy only, nothing injected).
func TestAdmissionCoordinatorInOwnNamespace(t *testing.T) {
	f := fixtureOn(t, injecttest.Serve(t))
	pod := webPod()
	asCoordinator(pod)
	code, resp := post(t, f.handler, review(t, admissionv1.Create, "contrast-system", pod, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	got := applyPatch(t, pod, resp)
	assert.Len(t, got.Annotations[policy.AnnotationPolicyHash], 64)
	assert.Equal(t, inject.DefaultRuntimeClassName, ptr.Deref(got.Spec.RuntimeClassName, ""))
	assert.Empty(t, got.Spec.InitContainers, "a Coordinator gets no Initializer")
	assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultMutated, "ok")), 0)
}

// webDeployment is the emojivoto web Deployment.
func webDeployment() *appsv1.Deployment {
	pod := webPod()
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "emojivoto"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web-svc"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec},
		},
	}
}

// TestAdmissionSkipsOtherObjects: kubewebhook decodes any object into a
// Pod, so whether the request is for a pod is decided by its kind and
// subresource. A webhook configuration that (mistakenly) matches more than
// pods must not patch those objects.
func TestAdmissionSkipsOtherObjects(t *testing.T) {
	imgs := injecttest.Serve(t)
	deploymentKind := metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	deployments := metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	podKind := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	pods := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	testCases := map[string]struct {
		kind        metav1.GroupVersionKind
		resource    metav1.GroupVersionResource
		subresource string
		obj         any
		reason      string
	}{
		"deployment":  {kind: deploymentKind, resource: deployments, obj: webDeployment(), reason: "not-a-pod"},
		"subresource": {kind: podKind, resource: pods, subresource: "status", obj: webPod(), reason: "subresource"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			body := reviewOf(t, admissionv1.Create, "emojivoto", tc.kind, tc.resource, tc.subresource, tc.obj, false)
			code, resp := post(t, f.handler, body)
			require.Equal(t, http.StatusOK, code)
			assert.True(t, resp.Allowed)
			assert.Empty(t, resp.Patch, "the object must be untouched")
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultSkipped, tc.reason)), 0)

			code, resp = postTo(t, f.handler, ValidatePath, body)
			require.Equal(t, http.StatusOK, code)
			assert.True(t, resp.Allowed)
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.validations.WithLabelValues(ResultSkipped, tc.reason)), 0)
		})
	}
}

func TestAdmissionDenies(t *testing.T) {
	imgs := injecttest.Serve(t)
	testCases := map[string]struct {
		mutate  func(*corev1.Pod)
		reason  string
		message []string
	}{
		"host network": {
			mutate:  func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			reason:  "host-namespace",
			message: []string{"spec.hostNetwork"},
		},
		"unresolvable image": {
			mutate:  func(p *corev1.Pod) { p.Spec.Containers[0].Image = "docker.l5d.io/buoyantio/emojivoto-web:v99" },
			reason:  "image",
			message: []string{"spec.containers[0].image", `"docker.l5d.io/buoyantio/emojivoto-web:v99"`},
		},
		"malformed mesh annotation": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{"contrast.cc/servicemesh-ingress": "web#http#false"}
			},
			reason:  "mesh-annotation",
			message: []string{"metadata.annotations[contrast.cc/servicemesh-ingress]", `"web#http#false"`},
		},
		"privileged": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
			},
			reason:  "privileged",
			message: []string{"spec.containers[0].securityContext.privileged"},
		},
		// The denials below are about the container holding the secret-looking
		// literal, whose policy data carries the value: the message names the
		// field and never the value.
		"secret value stays out of the message: too long": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "API_TOKEN", Value: strings.Repeat("s3cr3t-v4lu3", 100)})
			},
			reason:  "policy",
			message: []string{"spec.containers[0].env[4].value", "too long"},
		},
		"secret value stays out of the message: unsupported variable": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env,
					corev1.EnvVar{Name: "API_TOKEN", Value: "s3cr3t-v4lu3"},
					corev1.EnvVar{Name: "PHASE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.phase"}}},
				)
			},
			reason:  "policy",
			message: []string{"spec.containers[0].env[5].valueFrom.fieldRef.fieldPath", `"PHASE"`},
		},
		"secret value stays out of the message: referenced by an unresolvable image": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "API_TOKEN", Value: "s3cr3t-v4lu3"})
				p.Spec.Containers[0].Image = "docker.l5d.io/buoyantio/emojivoto-web:v99"
			},
			reason:  "image",
			message: []string{"spec.containers[0].image"},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			pod := webPod()
			tc.mutate(pod)
			code, resp := post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, false))
			require.Equal(t, http.StatusOK, code)
			assert.False(t, resp.Allowed)
			require.NotNil(t, resp.Result)
			for _, m := range tc.message {
				assert.Contains(t, resp.Result.Message, m)
			}
			assert.NotContains(t, resp.Result.Message, "s3cr3t")
			assert.Empty(t, resp.Patch)
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultDenied, tc.reason)), 0)
		})
	}
}

func TestAdmissionMalformedRequest(t *testing.T) {
	f := newFixture(t)
	code, _ := post(t, f.handler, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":`))
	assert.Equal(t, http.StatusBadRequest, code)
}

// TestAdmissionReviewWithoutRequest: reviews whose request kubewebhook's
// (case-sensitive, last duplicate wins) decoding would not see are refused
// with 400 before they reach it, on both paths; a valid one passes.
func TestAdmissionReviewWithoutRequest(t *testing.T) {
	f := newFixture(t)
	const head = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",`
	for name, tc := range map[string]struct {
		body string
		want int
	}{
		"no request":              {head + `"response":{}}`, http.StatusBadRequest},
		"null request":            {head + `"request":null}`, http.StatusBadRequest},
		"capitalised key":         {head + `"Request":{"uid":"x"}}`, http.StatusBadRequest},
		"last duplicate is null":  {head + `"request":{"uid":"x"},"request":null}`, http.StatusBadRequest},
		"request not an object":   {head + `"request":[1]}`, http.StatusBadRequest},
		"trailing data":           {head + `"request":{"uid":"x"}} {}`, http.StatusBadRequest},
		"not an object":           {`[]`, http.StatusBadRequest},
		"malformed after request": {head + `"request":{"uid":"x"},"x":}`, http.StatusBadRequest},
		"escaped key": {head + `"\u0072equest":{"uid":"0d3a1c8e-5d0e-4f5a-9a57-3b2f3c4d5e6f","kind":{"version":"v1","kind":"ConfigMap"},"operation":"CREATE","namespace":"ns","object":{}}}`,
			http.StatusOK},
	} {
		for _, path := range []string{MutatePath, ValidatePath, MutateStatefulSetPath} {
			code, _ := postTo(t, f.handler, path, []byte(tc.body))
			assert.Equal(t, tc.want, code, "%s %s", name, path)
		}
	}
}

// FuzzAdmissionReview feeds arbitrary bodies to the mutating and the
// validating admission handler: they must never panic, and every 200
// response must be a well-formed review.
func FuzzAdmissionReview(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ns","object":{"apiVersion":"v1","kind":"Pod","spec":{"hostNetwork":true,"containers":[{"name":"a","image":"x"}]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ns","object":{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"contrast.cc/policy-hash":"00","contrast.cc/injected":"{\"initContainers\":[\"a\"]}","contrast.cc/servicemesh-egress":"x#127.0.0.1:1#y:2"}},"spec":{"containers":[{"name":"a","image":"x"}]}}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","Request":{"uid":"x"}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"StatefulSet"},"operation":"CREATE","namespace":"ns","object":{"apiVersion":"apps/v1","kind":"StatefulSet","spec":{"template":{"metadata":{"annotations":{"contrast.cc/host-shared-volumes":"logs"}},"spec":{"containers":[{"name":"a","image":"x","volumeMounts":[{"name":"data","mountPath":"/d"}]}]}},"volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"volumeMode":"Filesystem"}},{"metadata":{"name":"logs"}}]}}}}`))
	metrics := NewMetrics(prometheus.NewRegistry())
	cfg := inject.Config{
		InitializerImage:           "registry.example/contrast/initializer@sha256:" + string(bytes.Repeat([]byte("1"), 64)),
		ProxyImage:                 "registry.example/contrast/mesh-proxy@sha256:" + string(bytes.Repeat([]byte("2"), 64)),
		CoordinatorAddress:         "coordinator:7777",
		Platform:                   attest.PlatformSNP,
		CoordinatorPolicyHashes:    [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	// no registry: every image is unresolvable, so the fuzzer exercises
	// decoding, skipping, injection and denial without network access
	m := &inject.Mutator{Config: cfg, Images: &unresolvingSource{}}
	h, err := NewAdmissionHandler(AdmissionConfig{Mutator: m, Metrics: metrics})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{MutatePath, ValidatePath, MutateStatefulSetPath} {
			req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, path, bytes.NewReader(body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				continue
			}
			var ar admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &ar); err != nil || ar.Response == nil {
				t.Fatalf("%s: malformed 200 response %q: %v", path, rec.Body.String(), err)
			}
			if path == MutateStatefulSetPath && !ar.Response.Allowed {
				t.Fatalf("the StatefulSet webhook denied a StatefulSet: %q", rec.Body.String())
			}
		}
	})
}

// TestAdmissionBindsNamespace checks that the policy binds the namespace of
// the admission request, also when the pod object names none: the same
// pod admitted into another namespace gets another policy hash.
func TestAdmissionBindsNamespace(t *testing.T) {
	f := newFixture(t)
	hashIn := func(namespace string, objectNamespace string) string {
		t.Helper()
		pod := webPod()
		pod.Namespace = objectNamespace
		code, resp := post(t, f.handler, review(t, admissionv1.Create, namespace, pod, false))
		require.Equal(t, http.StatusOK, code)
		require.True(t, resp.Allowed)
		got := applyPatch(t, pod, resp)
		data, err := policy.DataFromAnnotations(got.Annotations)
		require.NoError(t, err)
		assert.Equal(t, "^"+namespace+"$", data.Pod.NamespaceRegex)
		return got.Annotations[policy.AnnotationPolicyHash]
	}
	emojivoto := hashIn("emojivoto", "emojivoto")
	assert.Equal(t, emojivoto, hashIn("emojivoto", ""), "a pod object without namespace is bound to the request's")
	assert.NotEqual(t, emojivoto, hashIn("other", ""))
}

// TestPolicyAnnotationStandIns: the policy annotations pass kubewebhook's
// JSON patch computation as stand-ins; the patch the API server gets holds
// the real values and no stand-in, in both policy modes and on
// re-invocation.
func TestPolicyAnnotationStandIns(t *testing.T) {
	imgs := injecttest.Serve(t)
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%t", legacy), func(t *testing.T) {
			f := fixtureOn(t, imgs)
			f.mutator.Legacy = legacy
			pod := webPod()
			code, resp := post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, false))
			require.Equal(t, http.StatusOK, code)
			require.True(t, resp.Allowed, "%v", resp.Result)
			assert.NotContains(t, string(resp.Patch), standInPrefix)
			got := applyPatch(t, pod, resp)
			want, res, err := f.mutator.MutatePod(context.Background(), pod, nil)
			require.NoError(t, err)
			assert.Equal(t, want, got)
			key := policy.AnnotationInitData
			if legacy {
				key = policy.AnnotationLegacyPolicy
			}
			require.NotEmpty(t, res.Annotations[key])
			assert.Equal(t, res.Annotations[key], got.Annotations[key])

			// re-invoked with the annotations in place
			code, resp = post(t, f.handler, review(t, admissionv1.Create, "emojivoto", got, false))
			require.Equal(t, http.StatusOK, code)
			assert.NotContains(t, string(resp.Patch), standInPrefix)
			assert.Equal(t, got, applyPatch(t, got, resp))
		})
	}
}
