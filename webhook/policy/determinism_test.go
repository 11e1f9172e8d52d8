package policy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// admit simulates what the controllers, the API server's defaulting and
// admission (ServiceAccount plugin) and the Contrast webhook's image pinning
// do to a workload's pod template before the policy is computed.
func admit(t *testing.T, w policy.Workload, src images.Source) *corev1.Pod {
	t.Helper()
	tmpl := w.Template.DeepCopy()
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	ns := w.Namespace
	if ns == "" {
		ns = "default"
	}
	pod.Namespace = ns
	pod.UID = "3cfbfd7a-3065-4862-805e-3f5e4142bcbd"
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	ctrl := func(kind, name string) {
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: "0d2c5d8e-3b5f-4a57-9b49-111111111111", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	}
	switch w.Kind {
	case policy.KindDeployment:
		hash := "5f8d7c9b4d"
		pod.Labels["pod-template-hash"] = hash
		ctrl(policy.KindReplicaSet, w.Name+"-"+hash)
		pod.GenerateName = w.Name + "-" + hash + "-"
		pod.Name = pod.GenerateName + "x2k9z"
	case policy.KindStatefulSet:
		ctrl(policy.KindStatefulSet, w.Name)
		pod.Name = w.Name + "-0"
		pod.GenerateName = w.Name + "-"
		pod.Spec.Hostname = pod.Name
		pod.Spec.Subdomain = w.Name
		pod.Labels["controller-revision-hash"] = w.Name + "-7c9d8f6b5"
		pod.Labels["statefulset.kubernetes.io/pod-name"] = pod.Name
		pod.Labels["apps.kubernetes.io/pod-index"] = "0"
	case policy.KindDaemonSet:
		ctrl(policy.KindDaemonSet, w.Name)
		pod.GenerateName = w.Name + "-"
		pod.Name = pod.GenerateName + "h8v2q"
		pod.Labels["controller-revision-hash"] = "6b8c9d7f5"
		pod.Labels["pod-template-generation"] = "1"
		pod.Spec.Tolerations = append(pod.Spec.Tolerations,
			corev1.Toleration{Key: "node.kubernetes.io/disk-pressure", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	case policy.KindJob, policy.KindCronJob:
		job := w.Name
		if w.Kind == policy.KindCronJob {
			job = w.Name + "-29461740"
		}
		ctrl(policy.KindJob, job)
		pod.GenerateName = job + "-"
		pod.Name = pod.GenerateName + "q7w4z"
		pod.Labels["batch.kubernetes.io/controller-uid"] = "8e1f6c2a-0000-4000-8000-000000000000"
		pod.Labels["controller-uid"] = "8e1f6c2a-0000-4000-8000-000000000000"
		pod.Labels["batch.kubernetes.io/job-name"] = job
		pod.Labels["job-name"] = job
	}
	// defaulting
	spec := &pod.Spec
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	spec.DNSPolicy = corev1.DNSClusterFirst
	spec.SchedulerName = corev1.DefaultSchedulerName
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = "default"
	}
	spec.DeprecatedServiceAccount = spec.ServiceAccountName
	spec.TerminationGracePeriodSeconds = ptr.To[int64](30)
	spec.EnableServiceLinks = ptr.To(spec.EnableServiceLinks == nil || *spec.EnableServiceLinks)
	spec.PreemptionPolicy = ptr.To(corev1.PreemptLowerPriority)
	spec.Priority = ptr.To[int32](0)
	spec.Tolerations = append(spec.Tolerations,
		corev1.Toleration{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
		corev1.Toleration{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)})
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.ConfigMap != nil && v.ConfigMap.DefaultMode == nil {
			v.ConfigMap.DefaultMode = ptr.To[int32](0o644)
		}
		if v.Secret != nil && v.Secret.DefaultMode == nil {
			v.Secret.DefaultMode = ptr.To[int32](0o644)
		}
		if v.Projected != nil && v.Projected.DefaultMode == nil {
			v.Projected.DefaultMode = ptr.To[int32](0o644)
		}
	}
	automount := spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken
	tokenVolume := "kube-api-access-7xk2p"
	if automount {
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: tokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o644),
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
			},
		}}})
	}
	fix := func(cs []corev1.Container) {
		for i := range cs {
			c := &cs[i]
			c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			c.ImagePullPolicy = corev1.PullIfNotPresent
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("10m")
			for j := range c.Env {
				if f := c.Env[j].ValueFrom; f != nil && f.FieldRef != nil && f.FieldRef.APIVersion == "" {
					f.FieldRef.APIVersion = "v1"
				}
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
				if p != nil {
					p.TimeoutSeconds, p.PeriodSeconds, p.SuccessThreshold, p.FailureThreshold = 1, 10, 1, 3
				}
			}
			if automount {
				c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tokenVolume, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"})
			}
			// the webhook pins the image
			img, err := src.Resolve(t.Context(), c.Image, nil)
			require.NoError(t, err)
			if !strings.Contains(c.Image, "@") {
				c.Image += "@" + img.Digest
			}
		}
	}
	fix(spec.InitContainers)
	fix(spec.Containers)
	return pod
}

func goldenName(w policy.Workload) string {
	return strings.ToLower(w.Kind) + "-" + w.Name + ".golden"
}

// goldenText is what golden files hold: the hash and the policy data.
func goldenText(t *testing.T, res *policy.Result) []byte {
	t.Helper()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "policy-hash: %s\n", res.Annotations[policy.AnnotationPolicyHash])
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(res.Data))
	return buf.Bytes()
}

func TestGoldenAndDeterminism(t *testing.T) {
	src, _ := testRegistry(t)
	ws := append(emojivotoWorkloads(t), readWorkloads(t, "testdata/workloads.yaml", "testdata/privileged.yaml")...)
	require.Len(t, ws, 11)
	for _, w := range ws {
		t.Run(w.Kind+"/"+w.Name, func(t *testing.T) {
			fromYAML, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			again, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			require.Equal(t, fromYAML.Rego, again.Rego, "generation is not repeatable")

			pod := admit(t, w, src)
			// the webhook reads the ConfigMaps through the API server
			fromPod, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src, EnvSources: w.EnvSources})
			require.NoError(t, err)
			assert.Equal(t, string(goldenText(t, fromYAML)), string(goldenText(t, fromPod)))
			require.Equal(t, fromYAML.Rego, fromPod.Rego, "YAML-side and admitted-pod policies differ")
			require.Equal(t, fromYAML.Annotations, fromPod.Annotations)
			require.Equal(t, fromYAML.Kind, fromPod.Kind)

			// initdata round trip and digest
			doc, err := policy.ParseInitData(fromYAML.InitData)
			require.NoError(t, err)
			require.Equal(t, fromYAML.Rego, doc["policy.rego"])

			golden := filepath.Join("testdata", "golden", goldenName(w))
			got := goldenText(t, fromYAML)
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with UPDATE_GOLDEN=1 to create the golden file")
			require.Equal(t, string(want), string(got), "stale golden file; run with UPDATE_GOLDEN=1")
		})
	}
}
