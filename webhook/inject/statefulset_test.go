package inject

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/policy"
)

// statefulSets returns the StatefulSets of testdata/pv/volumes.yaml by name.
func statefulSets(t *testing.T) map[string]*appsv1.StatefulSet {
	t.Helper()
	out := map[string]*appsv1.StatefulSet{}
	for _, w := range readWorkloads(t, "testdata/pv/volumes.yaml") {
		if st, ok := w.Object.(*appsv1.StatefulSet); ok {
			out[w.Name] = st
		}
	}
	require.Len(t, out, 2)
	return out
}

func volumeModes(st *appsv1.StatefulSet) map[string]corev1.PersistentVolumeMode {
	out := map[string]corev1.PersistentVolumeMode{}
	for _, c := range st.Spec.VolumeClaimTemplates {
		out[c.Name] = ptr.Deref(c.Spec.VolumeMode, "")
	}
	return out
}

// TestBlockClaimTemplates checks the webhook's admission of StatefulSets:
// claim templates mounted as encrypted volumes become volumeMode Block
// (also over the API server's default Filesystem), host-shared ones are
// left alone, the pod template is never changed, and a template the pod
// admission would deny leaves the StatefulSet unchanged with that denial.
func TestBlockClaimTemplates(t *testing.T) {
	cfg := testMutator(t).Config
	fs := corev1.PersistentVolumeFilesystem
	cases := map[string]struct {
		set         string
		mod         func(st *appsv1.StatefulSet)
		wantChanged []string
		wantModes   map[string]corev1.PersistentVolumeMode
		wantField   string
		wantCode    DenyCode
	}{
		"encrypted claim template": {set: "db", wantChanged: []string{"data"},
			wantModes: map[string]corev1.PersistentVolumeMode{"data": corev1.PersistentVolumeBlock}},
		"defaulted Filesystem is overridden": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode = &fs
		}, wantChanged: []string{"data"}, wantModes: map[string]corev1.PersistentVolumeMode{"data": corev1.PersistentVolumeBlock}},
		"already Block (contrast generate's output)": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		}, wantModes: map[string]corev1.PersistentVolumeMode{"data": corev1.PersistentVolumeBlock}},
		"host-shared template left alone": {set: "ledger", mod: func(st *appsv1.StatefulSet) {
			st.Spec.VolumeClaimTemplates[1].Spec.VolumeMode = &fs
		}, wantChanged: []string{"data"},
			wantModes: map[string]corev1.PersistentVolumeMode{"data": corev1.PersistentVolumeBlock, "logs": fs}},
		"unmounted claim template is still the pod's volume": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Spec.Containers[0].VolumeMounts = nil
		}, wantChanged: []string{"data"}, wantModes: map[string]corev1.PersistentVolumeMode{"data": corev1.PersistentVolumeBlock}},
		"all host-shared": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Annotations = map[string]string{AnnotationHostSharedVolumes: "data"}
		}, wantModes: map[string]corev1.PersistentVolumeMode{"data": ""}},
		"Coordinator pod template": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Annotations = map[string]string{AnnotationPodRole: RoleCoordinator}
		}, wantModes: map[string]corev1.PersistentVolumeMode{"data": ""}},
		"no claim templates": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.VolumeClaimTemplates = nil
		}, wantModes: map[string]corev1.PersistentVolumeMode{}},
		"denied: host namespace": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Spec.HostNetwork = true
		}, wantField: "spec.hostNetwork", wantCode: DenyHostNamespace},
		"denied: host-shared names no persistent volume": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Annotations = map[string]string{AnnotationHostSharedVolumes: "cache"}
		}, wantField: "metadata.annotations[" + AnnotationHostSharedVolumes + "]", wantCode: DenyVolume},
		"denied: subPath of an encrypted volume": {set: "db", mod: func(st *appsv1.StatefulSet) {
			st.Spec.Template.Spec.Containers[0].VolumeMounts[0].SubPath = "x"
		}, wantField: "spec.containers[0].volumeMounts[0].subPath", wantCode: DenyVolume},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			st := statefulSets(t)[tc.set]
			if tc.mod != nil {
				tc.mod(st)
			}
			before := st.DeepCopy()
			changed, err := BlockClaimTemplates(st, cfg)
			if tc.wantField != "" {
				var de *DenyError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, tc.wantField, de.Field)
				assert.Equal(t, tc.wantCode, de.Code)
				assert.Equal(t, before, st, "a denied StatefulSet is left unchanged")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantChanged, changed)
			assert.Equal(t, tc.wantModes, volumeModes(st))
			assert.Equal(t, before.Spec.Template, st.Spec.Template, "the pod template is mutated at the pods' admission, not here")
			before.Spec.VolumeClaimTemplates = st.Spec.VolumeClaimTemplates
			assert.Equal(t, before, st, "only volume modes change")

			again, err := BlockClaimTemplates(st, cfg)
			require.NoError(t, err)
			assert.Empty(t, again, "idempotent")
		})
	}
}

// TestBlockClaimTemplatesMatchesGenerate checks the two ways a StatefulSet
// gets Block claims: the webhook's admission of the unmodified StatefulSet
// writes the claim templates contrast generate writes, and the pods the
// StatefulSet controller creates from the admitted StatefulSet get, at
// their own admission, the policy hash contrast generate computes.
func TestBlockClaimTemplatesMatchesGenerate(t *testing.T) {
	m := testMutator(t)
	for _, w := range readWorkloads(t, "testdata/pv/volumes.yaml") {
		if w.Kind != policy.KindStatefulSet {
			continue
		}
		t.Run(w.Name, func(t *testing.T) {
			admitted := w.Object.(*appsv1.StatefulSet).DeepCopy()
			changed, err := BlockClaimTemplates(admitted, m.Config)
			require.NoError(t, err)
			assert.Equal(t, []string{"data"}, changed)

			res, err := m.MutateWorkload(t.Context(), &w, nil) // contrast generate
			require.NoError(t, err)
			generated := w.Object.(*appsv1.StatefulSet)
			assert.Equal(t, generated.Spec.VolumeClaimTemplates, admitted.Spec.VolumeClaimTemplates)

			fromAdmitted := policy.Workload{Object: admitted, Kind: w.Kind, Name: w.Name, Namespace: w.Namespace, Template: admitted.Spec.Template}
			for i := range 2 {
				_, pres, err := m.MutatePod(t.Context(), statefulSetPod(&fromAdmitted, i), nil)
				require.NoError(t, err)
				assert.Equal(t, res.Annotations[policy.AnnotationPolicyHash], pres.Annotations[policy.AnnotationPolicyHash], "replica %d", i)
			}
		})
	}
}
