package server

import (
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
)

var (
	statefulSetKind     = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}
	statefulSetResource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
)

// dbStatefulSet is a StatefulSet with an encrypted claim template (data)
// and a host-shared one (logs) as the API server sends it to admission:
// volumeMode defaulted to Filesystem.
func dbStatefulSet() *appsv1.StatefulSet {
	claim := func(name string) corev1.PersistentVolumeClaim {
		return corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				VolumeMode:  ptr.To(corev1.PersistentVolumeFilesystem),
			},
		}
	}
	return &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "demo"},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: "db",
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "db"},
					Annotations: map[string]string{inject.AnnotationHostSharedVolumes: "logs"},
				},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "db", Image: "registry.example/acme/db:1.0",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/db"}, {Name: "logs", MountPath: "/var/log/db"}},
				}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{claim("data"), claim("logs")},
		},
	}
}

func patchStatefulSet(t *testing.T, st *appsv1.StatefulSet, resp *admissionv1.AdmissionResponse) *appsv1.StatefulSet {
	t.Helper()
	raw, err := json.Marshal(st)
	require.NoError(t, err)
	if len(resp.Patch) > 0 {
		p, err := jsonpatch.DecodePatch(resp.Patch)
		require.NoError(t, err)
		raw, err = p.Apply(raw)
		require.NoError(t, err)
	}
	var out appsv1.StatefulSet
	require.NoError(t, json.Unmarshal(raw, &out))
	return &out
}

// TestStatefulSetAdmission checks the webhook's admission of StatefulSets:
// the encrypted claim template becomes volumeMode Block, the host-shared
// one and everything else stay as admitted, a re-invocation or an update of
// the admitted object changes nothing, and an update that the API server
// defaulted back to Filesystem (kubectl replace of the unmodified YAML) is
// set to Block again.
func TestStatefulSetAdmission(t *testing.T) {
	f := newFixture(t)
	st := dbStatefulSet()
	code, resp := postTo(t, f.handler, MutateStatefulSetPath, reviewOf(t, admissionv1.Create, "demo", statefulSetKind, statefulSetResource, "", st, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	got := patchStatefulSet(t, st, resp)

	want := st.DeepCopy()
	want.Spec.VolumeClaimTemplates[0].Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	assert.Equal(t, want, got, "only the encrypted claim template's volumeMode changes")
	assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.statefulSets.WithLabelValues(ResultMutated, "ok")), 0)
	assert.Zero(t, testutil.CollectAndCount(f.metrics.admissions), "no pod admission")

	// a re-invocation, or an update of the admitted object, changes nothing
	for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
		code, resp = postTo(t, f.handler, MutateStatefulSetPath, reviewOf(t, op, "demo", statefulSetKind, statefulSetResource, "", got, false))
		require.Equal(t, http.StatusOK, code)
		require.True(t, resp.Allowed)
		assert.Equal(t, got, patchStatefulSet(t, got, resp), string(op))
	}
	assert.InDelta(t, 2, testutil.ToFloat64(f.metrics.statefulSets.WithLabelValues(ResultSkipped, reasonNoEncryptedClaims)), 0)

	// kubectl replace of the unmodified YAML: defaulted to Filesystem again
	code, resp = postTo(t, f.handler, MutateStatefulSetPath, reviewOf(t, admissionv1.Update, "demo", statefulSetKind, statefulSetResource, "", st, false))
	require.Equal(t, http.StatusOK, code)
	require.True(t, resp.Allowed)
	assert.Equal(t, want, patchStatefulSet(t, st, resp))
}

// TestStatefulSetAdmissionSkips checks the StatefulSets (and other
// requests) the StatefulSet admission leaves unchanged, and the reason it
// counts for each.
func TestStatefulSetAdmissionSkips(t *testing.T) {
	imgs := injecttest.Serve(t)
	cases := map[string]struct {
		namespace   string
		kind        metav1.GroupVersionKind
		subresource string
		mod         func(st *appsv1.StatefulSet)
		reason      string
	}{
		"kube-system":   {namespace: "kube-system", reason: "excluded-namespace"},
		"own namespace": {namespace: "contrast-system", reason: "excluded-namespace"},
		"opted-out pod template": {mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Labels[inject.LabelInject] = "disabled"
		}, reason: "opted-out"},
		"all host-shared": {mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Annotations[inject.AnnotationHostSharedVolumes] = "data,logs"
		}, reason: reasonNoEncryptedClaims},
		"no claim templates": {mod: func(st *appsv1.StatefulSet) {
			st.Spec.VolumeClaimTemplates = nil
			st.Spec.Template.Annotations = nil
			st.Spec.Template.Spec.Containers[0].VolumeMounts = nil
		}, reason: reasonNoEncryptedClaims},
		"pod template denied: host namespace": {mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Spec.HostNetwork = true
		}, reason: reasonPodDenied},
		"pod template denied: host-shared names no volume": {mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Annotations[inject.AnnotationHostSharedVolumes] = "cache"
		}, reason: reasonPodDenied},
		"scale subresource": {subresource: "scale", reason: reasonSubresource},
		"a Deployment":      {kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, reason: reasonNotAStatefulSet},
		"a pod":             {kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, reason: reasonNotAStatefulSet},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := fixtureOn(t, imgs)
			st := dbStatefulSet()
			if tc.mod != nil {
				tc.mod(st)
			}
			ns, kind := tc.namespace, tc.kind
			if ns == "" {
				ns = "demo"
			}
			if kind.Kind == "" {
				kind = statefulSetKind
			}
			code, resp := postTo(t, f.handler, MutateStatefulSetPath, reviewOf(t, admissionv1.Create, ns, kind, statefulSetResource, tc.subresource, st, false))
			require.Equal(t, http.StatusOK, code)
			assert.True(t, resp.Allowed, "never denied")
			assert.Equal(t, st, patchStatefulSet(t, st, resp), "unchanged")
			assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.statefulSets.WithLabelValues(ResultSkipped, tc.reason)), 0)
			assert.Equal(t, 1, testutil.CollectAndCount(f.metrics.statefulSets), "one observation")
		})
	}
}

// TestStatefulSetNotOnPodPath checks that a StatefulSet sent to the pods'
// path is left alone (the pods' webhook skips it as not a pod).
func TestStatefulSetNotOnPodPath(t *testing.T) {
	f := newFixture(t)
	st := dbStatefulSet()
	code, resp := postTo(t, f.handler, MutatePath, reviewOf(t, admissionv1.Create, "demo", statefulSetKind, statefulSetResource, "", st, false))
	require.Equal(t, http.StatusOK, code)
	assert.True(t, resp.Allowed)
	assert.Equal(t, st, patchStatefulSet(t, st, resp), "unchanged")
	assert.InDelta(t, 1, testutil.ToFloat64(f.metrics.admissions.WithLabelValues(ResultSkipped, reasonNotAPod)), 0)
	assert.Zero(t, testutil.CollectAndCount(f.metrics.statefulSets))
}
