package inject

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

var testConfig = Config{
	RuntimeClassName:           DefaultRuntimeClassName,
	InitializerImage:           "registry.example/contrast/initializer@sha256:" + strings.Repeat("1", 64),
	ProxyImage:                 "registry.example/contrast/mesh-proxy@sha256:" + strings.Repeat("2", 64),
	CoordinatorAddress:         "coordinator:7777",
	Platform:                   attest.PlatformSNP,
	CoordinatorPolicyHashes:    [][]byte{injecttest.CoordinatorPolicyHash},
	CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
}

func basePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "registry.example/acme/agent:2"},
			{Name: "other", Image: "registry.example/acme/agent:2"},
		}},
	}
}

func TestInjectDenials(t *testing.T) {
	testCases := map[string]struct {
		mutate    func(*corev1.Pod)
		wantField string
		wantMsg   string
	}{
		"foreign runtime class": {
			mutate:    func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr.To("kata-qemu") },
			wantField: "spec.runtimeClassName",
			wantMsg:   `"kata-qemu"`,
		},
		"host network": {
			mutate:    func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			wantField: "spec.hostNetwork",
		},
		"host PID": {
			mutate:    func(p *corev1.Pod) { p.Spec.HostPID = true },
			wantField: "spec.hostPID",
		},
		"host IPC": {
			mutate:    func(p *corev1.Pod) { p.Spec.HostIPC = true },
			wantField: "spec.hostIPC",
		},
		"privileged": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
			},
			wantField: "spec.containers[1].securityContext.privileged",
			wantMsg:   AnnotationAllowPrivileged,
		},
		"privileged init container": {
			mutate: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
			},
			wantField: "spec.initContainers[0].securityContext.privileged",
		},
		"malformed ingress": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{"contrast.cc/servicemesh-ingress": "web#80#false##web#x#true"}
			},
			wantField: "metadata.annotations[contrast.cc/servicemesh-ingress]",
			wantMsg:   `entry "web#x#true"`,
		},
		"malformed legacy egress": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{"contrast.edgeless.systems/servicemesh-egress": "db#10.0.0.1:5432#db:5432"}
			},
			wantField: "metadata.annotations[contrast.cc/servicemesh-egress]",
			wantMsg:   `entry "db#10.0.0.1:5432#db:5432"`,
		},
		"reserved container name": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[1].Name = InitializerName },
			wantField: "spec.containers[1].name",
		},
		"mount at /contrast": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/contrast/tls-config"}}
			},
			wantField: "spec.containers[0].volumeMounts[0].mountPath",
		},
		"proxy ingress port": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: ProxyIngressPort}}
			},
			wantField: "spec.containers[0].ports[1].containerPort",
		},
		"reserved volume name": {
			mutate:    func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: VolumeName}} },
			wantField: "spec.volumes[0].name",
		},
		"skip initializer with mesh": {
			mutate:    func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSkipInitializer: "true"} },
			wantField: "metadata.annotations[contrast.cc/skip-initializer]",
		},
		"forged injection record": {
			mutate:    func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInjected: "{"} },
			wantField: "metadata.annotations[contrast.cc/injected]",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			pod := basePod()
			tc.mutate(pod)
			before := pod.DeepCopy()
			_, err := Inject(pod, testConfig)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrDenied)
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.wantField, de.Field)
			assert.NotEmpty(t, de.Code)
			assert.Contains(t, err.Error(), tc.wantField)
			assert.Contains(t, err.Error(), tc.wantMsg)
			assert.Equal(t, before, pod, "Inject modified its input")
		})
	}
}

func TestInjectAllowed(t *testing.T) {
	testCases := map[string]struct {
		mutate         func(*corev1.Pod)
		wantInit       []string
		wantVolume     bool
		wantProxyEnvIn string
	}{
		"default": {
			wantInit:   []string{InitializerName, ProxyName},
			wantVolume: true,
		},
		"own runtime class": {
			mutate:     func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr.To(DefaultRuntimeClassName) },
			wantInit:   []string{InitializerName, ProxyName},
			wantVolume: true,
		},
		"privileged allowed by annotation": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{AnnotationAllowPrivileged: "true"}
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
			},
			wantInit:   []string{InitializerName, ProxyName},
			wantVolume: true,
		},
		"mesh disabled": {
			mutate:     func(p *corev1.Pod) { p.Annotations = map[string]string{"contrast.cc/servicemesh": "disabled"} },
			wantInit:   []string{InitializerName},
			wantVolume: true,
		},
		"skip initializer without mesh": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{AnnotationSkipInitializer: "true", "contrast.cc/servicemesh": "disabled"}
			},
		},
		"coordinator": {
			mutate: func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationPodRole: RoleCoordinator} },
		},
		"user init containers run after ours": {
			mutate:     func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "x"}} },
			wantInit:   []string{InitializerName, ProxyName, "setup"},
			wantVolume: true,
		},
		"ingress passed to the proxy in canonical form": {
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{"contrast.edgeless.systems/servicemesh-ingress": "web#443#false"}
			},
			wantInit:       []string{InitializerName, ProxyName},
			wantVolume:     true,
			wantProxyEnvIn: "web#443#false",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			pod := basePod()
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			out, err := Inject(pod, testConfig)
			require.NoError(t, err)
			assert.Equal(t, DefaultRuntimeClassName, ptr.Deref(out.Spec.RuntimeClassName, ""))
			var names []string
			for _, c := range out.Spec.InitContainers {
				names = append(names, c.Name)
			}
			assert.Equal(t, tc.wantInit, names)
			hasVolume := false
			for _, v := range out.Spec.Volumes {
				if v.Name == VolumeName {
					hasVolume = true
					require.NotNil(t, v.EmptyDir)
					assert.Equal(t, corev1.StorageMediumMemory, v.EmptyDir.Medium)
				}
			}
			assert.Equal(t, tc.wantVolume, hasVolume)
			for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
				mounted := false
				for _, m := range c.VolumeMounts {
					mounted = mounted || (m.Name == VolumeName && m.MountPath == MountPath)
				}
				assert.Equal(t, tc.wantVolume, mounted, "container %s", c.Name)
				if c.Name == ProxyName {
					assert.Equal(t, corev1.ContainerRestartPolicyAlways, ptr.Deref(c.RestartPolicy, ""))
					if tc.wantProxyEnvIn != "" {
						assert.Contains(t, c.Env, corev1.EnvVar{Name: "CONTRAST_SERVICEMESH_INGRESS", Value: tc.wantProxyEnvIn})
					}
				}
			}
			_, recorded := out.Annotations[AnnotationInjected]
			assert.Equal(t, len(tc.wantInit) > 0, recorded)
		})
	}
}

// TestInjectIdempotent re-injects an injected pod, also after the mesh
// annotation changed in between (as another webhook might do).
func TestInjectIdempotent(t *testing.T) {
	pod := basePod()
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "x"}}
	once, err := Inject(pod, testConfig)
	require.NoError(t, err)
	twice, err := Inject(once, testConfig)
	require.NoError(t, err)
	assert.Equal(t, once, twice)

	changed := once.DeepCopy()
	changed.Annotations["contrast.cc/servicemesh"] = "disabled"
	again, err := Inject(changed, testConfig)
	require.NoError(t, err)
	require.Len(t, again.Spec.InitContainers, 2)
	assert.Equal(t, InitializerName, again.Spec.InitContainers[0].Name)
	assert.Equal(t, "setup", again.Spec.InitContainers[1].Name)
	assert.Len(t, again.Spec.Containers[0].VolumeMounts, 1)
}

// TestAdmittedPodMatchesYAML is the property the whole design rests on: the
// pod the ReplicaSet controller creates from an emojivoto Deployment, mutated
// at admission, has the policy hash that the YAML side (contrast generate)
// computes from the unmodified manifest.
func TestAdmittedPodMatchesYAML(t *testing.T) {
	m := testMutator(t)
	ctx := context.Background()
	n := 0
	for _, f := range emojivotoFiles(t) {
		for _, w := range readWorkloads(t, f) {
			if w.Kind != policy.KindDeployment {
				continue
			}
			n++
			t.Run(w.Name, func(t *testing.T) {
				admitted := controllerPod(&w)
				yamlSide := w
				yamlSide.Template = *w.Template.DeepCopy()
				want, err := m.MutateWorkload(ctx, &yamlSide, nil)
				require.NoError(t, err)

				out, got, err := m.MutatePod(ctx, admitted, nil)
				require.NoError(t, err)
				assert.Equal(t, want.Annotations[policy.AnnotationPolicyHash], got.Annotations[policy.AnnotationPolicyHash])
				assert.Equal(t, want.Annotations[policy.AnnotationPolicyHash], out.Annotations[policy.AnnotationPolicyHash])

				// re-invocation: same pod, same policy
				again, res2, err := m.MutatePod(ctx, out, nil)
				require.NoError(t, err)
				assert.Equal(t, out, again)
				assert.Equal(t, got.Digest, res2.Digest)

				// a later webhook adds a variable: the re-invocation catches it
				tampered := out.DeepCopy()
				tampered.Spec.Containers[0].Env = append(tampered.Spec.Containers[0].Env, corev1.EnvVar{Name: "LD_PRELOAD", Value: "/evil.so"})
				_, res3, err := m.MutatePod(ctx, tampered, nil)
				require.NoError(t, err)
				assert.NotEqual(t, got.Digest, res3.Digest)
			})
		}
	}
	require.Equal(t, 4, n, "emojivoto has four Deployments")
}

// controllerPod is the pod the ReplicaSet controller creates for a
// Deployment, as the API server passes it to admission webhooks (defaults
// applied, service-account token volume added, name not yet generated).
func controllerPod(w *policy.Workload) *corev1.Pod {
	const hash = "5d8f9c7b6d"
	t := w.Template.DeepCopy()
	labels := map[string]string{"pod-template-hash": hash}
	for k, v := range t.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: w.Name + "-" + hash + "-",
			Namespace:    w.Namespace,
			Labels:       labels,
			Annotations:  t.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: w.Name + "-" + hash,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: t.Spec,
	}
	token := corev1.Volume{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}}},
	}}}
	pod.Spec.Volumes = append(pod.Spec.Volumes, token)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: token.Name, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	pod.Spec.SchedulerName = corev1.DefaultSchedulerName
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](30)
	pod.Spec.EnableServiceLinks = ptr.To(true)
	return pod
}

func TestMutatePodDenials(t *testing.T) {
	m := testMutator(t)
	ctx := context.Background()

	t.Run("unresolvable image names the image", func(t *testing.T) {
		pod := basePod()
		pod.Spec.Containers[1].Image = "registry.example/acme/missing:1"
		_, _, err := m.MutatePod(ctx, pod, nil)
		require.ErrorIs(t, err, ErrDenied)
		assert.Contains(t, err.Error(), "spec.containers[1].image")
		assert.Contains(t, err.Error(), `"registry.example/acme/missing:1"`)
	})
	t.Run("policy over budget", func(t *testing.T) {
		small := *m
		small.MaxPolicyBytes = 1000
		_, _, err := small.MutatePod(ctx, basePod(), nil)
		require.ErrorIs(t, err, ErrDenied)
		assert.Contains(t, err.Error(), "metadata.annotations["+policy.AnnotationInitData+"]")
		assert.Contains(t, err.Error(), "budget of 1000 bytes")
	})
	t.Run("unsupported volume is denied by the policy generator", func(t *testing.T) {
		pod := basePod()
		pod.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		_, _, err := m.MutatePod(ctx, pod, nil)
		require.ErrorIs(t, err, ErrDenied)
		require.ErrorIs(t, err, policy.ErrUnsupported)
		var de *DenyError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, DenyPolicy, de.Code)
		assert.Equal(t, "spec.volumes[0].hostPath", de.Field)
	})
	t.Run("canceled context is not a denial", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		pod := basePod()
		pod.Spec.Containers[0].Image = "registry.example/acme/agent:uncached"
		_, _, err := m.MutatePod(cctx, pod, nil)
		require.Error(t, err)
		assert.NotErrorIs(t, err, ErrDenied)
	})
}

// TestMutatePodPrivileged: the annotation admits a pod with privileged
// containers all the way to a policy; without it the pod is denied and the
// denial names the field.
func TestMutatePodPrivileged(t *testing.T) {
	m := testMutator(t)
	ctx := context.Background()
	privileged := func(init bool) *corev1.Pod {
		pod := basePod()
		sc := &corev1.SecurityContext{Privileged: ptr.To(true)}
		if init {
			pod.Spec.InitContainers = []corev1.Container{{Name: "tune", Image: "registry.example/acme/agent:2", SecurityContext: sc}}
		} else {
			pod.Spec.Containers[1].SecurityContext = sc
		}
		return pod
	}
	for name, tc := range map[string]struct {
		init      bool
		wantField string
		wantPriv  string
	}{
		"app container":  {wantField: "spec.containers[1].securityContext.privileged", wantPriv: "other"},
		"init container": {init: true, wantField: "spec.initContainers[0].securityContext.privileged", wantPriv: "tune"},
	} {
		t.Run(name+" denied without the annotation", func(t *testing.T) {
			_, _, err := m.MutatePod(ctx, privileged(tc.init), nil)
			require.ErrorIs(t, err, ErrDenied)
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, DenyPrivileged, de.Code)
			assert.Equal(t, tc.wantField, de.Field)
			assert.Contains(t, err.Error(), AnnotationAllowPrivileged)
		})
		t.Run(name+" admitted with the annotation", func(t *testing.T) {
			pod := privileged(tc.init)
			pod.Annotations = map[string]string{AnnotationAllowPrivileged: "true"}
			out, res, err := m.MutatePod(ctx, pod, nil)
			require.NoError(t, err)
			require.NotEmpty(t, out.Annotations[policy.AnnotationInitData])
			priv := map[string]bool{}
			for _, c := range res.Data.Containers {
				priv[c.Name] = c.Privileged
			}
			for n, p := range priv {
				assert.Equal(t, n == tc.wantPriv, p, "container %q privileged", n)
			}
		})
	}
	t.Run("annotation must be exactly true", func(t *testing.T) {
		pod := privileged(false)
		pod.Annotations = map[string]string{AnnotationAllowPrivileged: "yes"}
		_, _, err := m.MutatePod(ctx, pod, nil)
		require.ErrorIs(t, err, ErrDenied)
	})
}

// secretValue stands for a credential in a literal environment variable or
// argument. No denial may contain it.
const secretValue = "s3cr3t-hunter2-AKIAIOSFODNN7EXAMPLE" //nolint:gosec // G101: a marker, not a credential

// TestPolicyDenialFields: a pod the policy generator refuses is denied with
// the offending field in the indices of the pod as submitted (the generator
// sees the pod after injection, with the Initializer and the proxy as the
// first init containers and the Contrast volume and mounts appended).
func TestPolicyDenialFields(t *testing.T) {
	m := testMutator(t)
	ctx := context.Background()
	podIP := corev1.EnvVar{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}
	withInit := func(p *corev1.Pod) *corev1.Container {
		p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "registry.example/acme/agent:2", Env: []corev1.EnvVar{podIP}}}
		return &p.Spec.InitContainers[0]
	}
	testCases := map[string]struct {
		mutate    func(*corev1.Pod)
		wantField string
		wantCode  DenyCode
	}{
		"init container env": {
			mutate: func(p *corev1.Pod) {
				c := withInit(p)
				c.Env = append(c.Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{}})
			},
			wantField: "spec.initContainers[0].env[1].valueFrom",
			wantCode:  DenyPolicy,
		},
		"init container env name with a secret": {
			mutate: func(p *corev1.Pod) {
				c := withInit(p)
				c.Env = append(c.Env, corev1.EnvVar{Name: "TOKEN=" + secretValue, Value: "x"})
			},
			wantField: "spec.initContainers[0].env[1].name",
			wantCode:  DenyPolicy,
		},
		"init container image": {
			mutate: func(p *corev1.Pod) {
				withInit(p).Image = "registry.example/acme/missing:1"
				p.Spec.Containers[1].Image = "registry.example/acme/missing:2"
			},
			wantField: "spec.initContainers[0].image",
			wantCode:  DenyImage,
		},
		"app container env with a secret": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[1].Env = []corev1.EnvVar{podIP, {Name: "URL=https://" + secretValue, Value: "x"}}
			},
			wantField: "spec.containers[1].env[1].name",
			wantCode:  DenyPolicy,
		},
		"sub path": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "d", MountPath: "/a"}, {Name: "d", MountPath: "/b", SubPath: "b/../../" + secretValue}}
			},
			wantField: "spec.containers[0].volumeMounts[1].subPath",
			wantCode:  DenyPolicy,
		},
		"volume after others": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{
					{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "c", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: "/export"}}},
				}
			},
			wantField: "spec.volumes[1].nfs",
			wantCode:  DenyPolicy,
		},
		"long literal env value": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "BLOB", Value: strings.Repeat(secretValue, 40)}}
			},
			wantField: "spec.containers[0].env[0].value",
			wantCode:  DenyPolicy,
		},
	}
	check := func(t *testing.T, err error, wantField string, wantCode DenyCode) {
		t.Helper()
		require.ErrorIs(t, err, ErrDenied)
		var de *DenyError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, wantCode, de.Code)
		assert.Equal(t, wantField, de.Field)
		msg := err.Error()
		assert.True(t, strings.HasPrefix(msg, wantField+": "), msg)
		assert.Equal(t, 1, strings.Count(msg, ".env[")+strings.Count(msg, ".args[")+strings.Count(msg, ".volumeMounts[")+strings.Count(msg, "spec.volumes[")+strings.Count(msg, ".image"), "field named once: %s", msg)
		assert.NotContains(t, msg, secretValue)
		assert.NotContains(t, msg, "hunter2")
	}
	for name, tc := range testCases {
		t.Run(name+"/pod", func(t *testing.T) {
			pod := basePod()
			tc.mutate(pod)
			_, _, err := m.MutatePod(ctx, pod, nil)
			check(t, err, tc.wantField, tc.wantCode)
		})
		t.Run(name+"/workload", func(t *testing.T) {
			pod := basePod()
			tc.mutate(pod)
			w := &policy.Workload{Kind: policy.KindPod, Name: pod.Name, Namespace: pod.Namespace,
				Template: corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}}
			_, err := m.MutateWorkload(ctx, w, nil)
			check(t, err, tc.wantField, tc.wantCode)
		})
	}

	// A pod the webhook injected before (reinvocation) still has the
	// injected containers in front: the field is in its indices.
	t.Run("reinvocation", func(t *testing.T) {
		pod := basePod()
		c := withInit(pod)
		c.Env = append(c.Env, corev1.EnvVar{Name: "1URL", Value: "x"})
		pod.Annotations = map[string]string{AnnotationAllowPrivileged: "true"}
		injected, err := Inject(pod, m.Config)
		require.NoError(t, err)
		require.Equal(t, "setup", injected.Spec.InitContainers[2].Name)
		_, _, err = m.MutatePod(ctx, injected, nil)
		check(t, err, "spec.initContainers[2].env[1].name", DenyPolicy)
	})
}

func TestSubmittedField(t *testing.T) {
	orig := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "a"}},
		// an earlier injection's mount and volume, in front of the pod's own
		Containers: []corev1.Container{{Name: "x", VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeName, MountPath: MountPath}, {Name: "v", MountPath: "/v"},
		}}},
		Volumes: []corev1.Volume{{Name: VolumeName}, {Name: "v"}},
	}
	// stripped and injected again: now at the end
	final := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: InitializerName}, {Name: ProxyName}, {Name: "a"}},
		Containers: []corev1.Container{{Name: "x", VolumeMounts: []corev1.VolumeMount{
			{Name: "v", MountPath: "/v"}, {Name: VolumeName, MountPath: MountPath},
		}}},
		Volumes: []corev1.Volume{{Name: "v"}, {Name: VolumeName}},
	}
	for in, want := range map[string]string{
		"spec.initContainers[2].env[0].value":           "spec.initContainers[0].env[0].value",
		"spec.initContainers[0].image":                  "spec.initContainers[0].image", // injected: kept
		"spec.initContainers[7].image":                  "spec.initContainers[7].image",
		"spec.containers[0].volumeMounts[0].subPath":    "spec.containers[0].volumeMounts[1].subPath",
		"spec.containers[0].volumeMounts[1].mountPath":  "spec.containers[0].volumeMounts[0].mountPath",
		"spec.containers[0].volumeMounts[5].name":       "spec.containers[0].volumeMounts[5].name",
		"spec.volumes[0].nfs":                           "spec.volumes[1].nfs",
		"spec.volumes[1]":                               "spec.volumes[0]",
		"spec.volumes[3]":                               "spec.volumes[3]",
		"spec.hostNetwork":                              "spec.hostNetwork",
		"spec.containers[0].command":                    "spec.containers[0].command",
		"spec.containers[0].securityContext.privileged": "spec.containers[0].securityContext.privileged",
	} {
		assert.Equal(t, want, submittedField(in, final, orig), in)
	}
}
