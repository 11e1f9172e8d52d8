package inject

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/initializer/pv"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// TestPersistentVolumeGolden injects testdata/pv/*.yaml (encrypted and
// host-shared persistent volumes) and compares the final pod templates and
// the StatefulSets' claim templates with testdata/pv/golden/
// (UPDATE_GOLDEN=1 rewrites them).
func TestPersistentVolumeGolden(t *testing.T) {
	m := testMutator(t)
	inputs, err := filepath.Glob("testdata/pv/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	update := os.Getenv("UPDATE_GOLDEN") == "1"
	want := map[string]bool{}
	for _, in := range inputs {
		for _, w := range readWorkloads(t, in) {
			file := strings.ToLower(fmt.Sprintf("%s-%s.golden", w.Kind, w.Name))
			want[file] = true
			t.Run(file, func(t *testing.T) {
				res, err := m.MutateWorkload(t.Context(), &w, nil)
				require.NoError(t, err)
				got := renderGolden(t, in, &w, res)
				if st, ok := w.Object.(*appsv1.StatefulSet); ok {
					b, err := yaml.Marshal(map[string]any{"volumeClaimTemplates": st.Spec.VolumeClaimTemplates})
					require.NoError(t, err)
					got = append(got, b...)
				}
				path := filepath.Join("testdata", "pv", "golden", file)
				if update {
					require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
					require.NoError(t, os.WriteFile(path, got, 0o600))
					return
				}
				old, err := os.ReadFile(path)
				require.NoError(t, err, "missing golden file; run with UPDATE_GOLDEN=1")
				require.Equal(t, string(old), string(got), "stale golden file %s; run with UPDATE_GOLDEN=1 after checking the difference", path)
			})
		}
	}
	existing, err := filepath.Glob("testdata/pv/golden/*.golden")
	require.NoError(t, err)
	for _, e := range existing {
		if !want[filepath.Base(e)] && !update {
			t.Errorf("orphaned golden file %s", e)
		}
	}
}

// statefulSetPod is the pod the StatefulSet controller creates for ordinal
// i: its claim volumes (claims <template>-<pod>) in front of the template's.
func statefulSetPod(w *policy.Workload, i int) *corev1.Pod {
	st := w.Object.(*appsv1.StatefulSet)
	name := fmt.Sprintf("%s-%d", w.Name, i)
	pod := &corev1.Pod{ObjectMeta: *w.Template.ObjectMeta.DeepCopy(), Spec: *w.Template.Spec.DeepCopy()}
	pod.Name, pod.Namespace = name, w.Namespace
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: w.Name, UID: "1", Controller: ptr.To(true)}}
	var vols []corev1.Volume
	for _, c := range st.Spec.VolumeClaimTemplates {
		vols = append(vols, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + name},
		}})
	}
	pod.Spec.Volumes = append(vols, pod.Spec.Volumes...)
	return pod
}

// TestPersistentVolumeWebhookMatchesGenerate checks that the pods the
// StatefulSet controller creates get, from the webhook, the policy contrast
// generate computes for the StatefulSet, for every replica, and that the
// Initializer learns the claim template's name, not the per-pod claim.
func TestPersistentVolumeWebhookMatchesGenerate(t *testing.T) {
	m := testMutator(t)
	for _, w := range readWorkloads(t, "testdata/pv/volumes.yaml") {
		if w.Kind != policy.KindStatefulSet {
			continue
		}
		t.Run(w.Name, func(t *testing.T) {
			orig := w
			orig.Template = *w.Template.DeepCopy()
			res, err := m.MutateWorkload(t.Context(), &w, nil)
			require.NoError(t, err)
			for i := range 2 {
				pod, pres, err := m.MutatePod(t.Context(), statefulSetPod(&orig, i), nil)
				require.NoError(t, err)
				assert.Equal(t, res.HostData, pres.HostData, "replica %d", i)
				require.Equal(t, InitializerName, pod.Spec.InitContainers[0].Name)
				var env string
				for _, e := range pod.Spec.InitContainers[0].Env {
					if e.Name == pv.EnvVolumes {
						env = e.Value
					}
				}
				vols, err := pv.Parse(env)
				require.NoError(t, err)
				require.NotEmpty(t, vols)
				for _, v := range vols {
					assert.Equal(t, v.Name, v.Claim, "the key of a claim template's volume is derived for the template's name")
				}
			}
		})
	}
}

// TestPersistentVolumeEphemeralMatchesGenerate: the pod a controller
// creates (unmutated template, generated name) gets the policy
// contrast generate computes, and its ephemeral claim template is made a
// block device on both sides.
func TestPersistentVolumeEphemeralMatchesGenerate(t *testing.T) {
	m := testMutator(t)
	w := readWorkloads(t, "testdata/pv/volumes.yaml")[2] // worker
	require.Equal(t, policy.KindDeployment, w.Kind)
	pod := &corev1.Pod{ObjectMeta: *w.Template.ObjectMeta.DeepCopy(), Spec: *w.Template.Spec.DeepCopy()}
	// as the ReplicaSet controller creates it
	pod.Namespace, pod.GenerateName = w.Namespace, w.Name+"-7d9f8b6c5d-"
	pod.Labels["pod-template-hash"] = "7d9f8b6c5d"
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: w.Name + "-7d9f8b6c5d", UID: "1", Controller: ptr.To(true)}}
	res, err := m.MutateWorkload(t.Context(), &w, nil)
	require.NoError(t, err)
	out, pres, err := m.MutatePod(t.Context(), pod, nil)
	require.NoError(t, err)
	assert.Equal(t, res.HostData, pres.HostData)
	for name, spec := range map[string]*corev1.PodSpec{"workload": &w.Template.Spec, "pod": &out.Spec} {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "scratch" })
		require.GreaterOrEqual(t, i, 0, name)
		assert.Equal(t, corev1.PersistentVolumeBlock, *spec.Volumes[i].Ephemeral.VolumeClaimTemplate.Spec.VolumeMode, name)
	}
}

// TestPersistentVolumeEncrypted checks the mutation of an encrypted volume
// in detail.
func TestPersistentVolumeEncrypted(t *testing.T) {
	m := testMutator(t)
	ws := readWorkloads(t, "testdata/pv/volumes.yaml")
	w := ws[1] // ledger: data encrypted, logs host-shared
	orig := w
	orig.Template = *w.Template.DeepCopy()
	res, err := m.MutateWorkload(t.Context(), &w, nil)
	require.NoError(t, err)
	require.NotNil(t, res)
	spec := &w.Template.Spec
	init := spec.InitContainers[0]
	require.Equal(t, InitializerName, init.Name)
	assert.Equal(t, []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/contrast-pv/data"}}, init.VolumeDevices)
	assert.Contains(t, init.VolumeMounts, corev1.VolumeMount{Name: "contrast-pv-data", MountPath: "/contrast-pv/data", MountPropagation: ptr.To(corev1.MountPropagationBidirectional)})
	assert.Contains(t, init.Env, corev1.EnvVar{Name: pv.EnvVolumes, Value: "data:data"})
	assert.False(t, slices.ContainsFunc(init.Env, func(e corev1.EnvVar) bool { return e.Name == pv.EnvFSGroup }), "ledger has no fsGroup")
	require.NotNil(t, init.SecurityContext)
	assert.True(t, *init.SecurityContext.Privileged)
	assert.Equal(t, int64(0), *init.SecurityContext.RunAsUser, "root, whatever the pod's runAsUser")
	// the workload's mounts of data now come from the Initializer, logs still from the host
	for _, c := range []corev1.Container{spec.InitContainers[2], spec.Containers[0]} {
		assert.Equal(t, "contrast-pv-data", c.VolumeMounts[0].Name, c.Name)
		assert.Equal(t, corev1.MountPropagationHostToContainer, *c.VolumeMounts[0].MountPropagation, c.Name)
		assert.Empty(t, c.VolumeDevices, c.Name)
	}
	assert.Equal(t, "logs", spec.Containers[0].VolumeMounts[1].Name)
	assert.Nil(t, spec.Containers[0].VolumeMounts[1].MountPropagation)
	st := w.Object.(*appsv1.StatefulSet)
	assert.Equal(t, corev1.PersistentVolumeBlock, *st.Spec.VolumeClaimTemplates[0].Spec.VolumeMode, "data is provisioned as a block device")
	assert.Nil(t, st.Spec.VolumeClaimTemplates[1].Spec.VolumeMode, "logs stays a file system")

	// a second injection (webhook reinvocation) gives the same pod
	pod, _, err := m.MutatePod(t.Context(), statefulSetPod(&orig, 0), nil)
	require.NoError(t, err)
	again, err := Inject(pod, m.Config)
	require.NoError(t, err)
	assert.Equal(t, pod.Spec, again.Spec)
}

// TestPersistentVolumeFSGroup checks that the Initializer learns the pod's
// fsGroup, which it gives the root of each opened volume.
func TestPersistentVolumeFSGroup(t *testing.T) {
	m := testMutator(t)
	w := readWorkloads(t, "testdata/pv/volumes.yaml")[0] // db: fsGroup 999
	_, err := m.MutateWorkload(t.Context(), &w, nil)
	require.NoError(t, err)
	init := w.Template.Spec.InitContainers[0]
	assert.Contains(t, init.Env, corev1.EnvVar{Name: pv.EnvFSGroup, Value: "999"})
	// the pod's runAsUser 999 does not apply to the Initializer
	assert.Equal(t, int64(0), *init.SecurityContext.RunAsUser)
	assert.False(t, *init.SecurityContext.RunAsNonRoot)
}

// TestPersistentVolumeDenials checks that pods whose persistent volumes
// cannot be encrypted as asked are denied, naming the field.
func TestPersistentVolumeDenials(t *testing.T) {
	m := testMutator(t)
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "demo", Annotations: map[string]string{}},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{
					Name: "db", Image: "registry.example/acme/db:1.0",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
				}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "db-data"},
				}}},
			},
		}
	}
	cases := map[string]struct {
		mod       func(p *corev1.Pod)
		wantField string
		wantCode  DenyCode
	}{
		"subPath": {func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts[0].SubPath = "x" },
			"spec.containers[0].volumeMounts[0].subPath", DenyVolume},
		"mount propagation": {func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts[0].MountPropagation = ptr.To(corev1.MountPropagationHostToContainer)
		}, "spec.containers[0].volumeMounts[0].mountPropagation", DenyVolume},
		"raw device of an encrypted volume": {func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
		}, "spec.containers[0].volumeDevices[0]", DenyVolume},
		"host-shared names no persistent volume": {func(p *corev1.Pod) {
			p.Annotations[AnnotationHostSharedVolumes] = "cache"
		}, "metadata.annotations[" + AnnotationHostSharedVolumes + "]", DenyVolume},
		"without the Initializer": {func(p *corev1.Pod) {
			p.Annotations[AnnotationSkipInitializer] = "true"
			p.Annotations["contrast.cc/servicemesh"] = "disabled"
		}, "metadata.annotations[" + AnnotationSkipInitializer + "]", DenyVolume},
		"volume name too long for its shared volume": {func(p *corev1.Pod) {
			n := strings.Repeat("d", 60)
			p.Spec.Volumes[0].Name, p.Spec.Containers[0].VolumeMounts[0].Name = n, n
		}, "spec.volumes[0].name", DenyVolume},
		"reserved volume name": {func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "contrast-pv-x", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "spec.volumes[1].name", DenyReserved},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := base()
			tc.mod(p)
			_, _, err := m.MutatePod(context.Background(), p, nil)
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.wantField, de.Field)
			assert.Equal(t, tc.wantCode, de.Code)
		})
	}
	t.Run("allowed host-shared", func(t *testing.T) {
		p := base()
		p.Annotations[AnnotationHostSharedVolumes] = "data"
		out, _, err := m.MutatePod(context.Background(), p, nil)
		require.NoError(t, err)
		assert.Equal(t, "data", out.Spec.Containers[0].VolumeMounts[0].Name)
		assert.Empty(t, out.Spec.InitContainers[0].VolumeDevices)
	})
}
