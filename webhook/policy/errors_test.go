package policy_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// secretValue stands for a credential a pod passes in a literal environment
// variable or argument. No error may contain it.
const secretValue = "s3cr3t-hunter2-AKIAIOSFODNN7EXAMPLE" //nolint:gosec // G101: a marker, not a credential

func digest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

// errorSource serves the images of the field error cases.
func errorSource() *images.Static {
	img := func(repo string, c byte, cfg images.Config) *images.Image {
		return &images.Image{Repository: repo, Digest: digest(c), Config: cfg}
	}
	return &images.Static{
		Images: map[string]*images.Image{
			"registry.example/acme/app:1":         img("registry.example/acme/app", 'a', images.Config{Entrypoint: []string{"/app"}, Env: []string{"PATH=/bin"}}),
			"registry.example/acme/nocmd:1":       img("registry.example/acme/nocmd", 'b', images.Config{Env: []string{"PATH=/bin"}}),
			"registry.example/acme/ghost-user:1":  img("registry.example/acme/ghost-user", 'c', images.Config{Entrypoint: []string{"/app"}, User: "ghost"}),
			"registry.example/acme/ghost-group:1": img("registry.example/acme/ghost-group", 'd', images.Config{Entrypoint: []string{"/app"}, User: "1000:ghosts"}),
			"registry.example/acme/no-accounts:1": img("registry.example/acme/no-accounts", 'e', images.Config{Entrypoint: []string{"/app"}, User: "app"}),
			"registry.example/acme/long-env:1":    img("registry.example/acme/long-env", 'f', images.Config{Entrypoint: []string{"/app"}, Env: []string{"BLOB=" + strings.Repeat("x", 1100)}}),
			"Not An Image!":                       img("registry.example/acme/odd", '9', images.Config{Entrypoint: []string{"/app"}}),
		},
		UserDB: map[string]*images.Accounts{
			digest('c'): {Users: []images.User{{Name: "root"}}, Groups: []images.Group{{Name: "root"}}},
			digest('d'): {Users: []images.User{{Name: "root"}}, Groups: []images.Group{{Name: "root"}}},
		},
	}
}

// errorPod has an init container and two app containers, each with the
// service-account token mount first, and the token volume first: the
// generator drops those, so correct paths must use the input's indices.
func errorPod() *corev1.Pod {
	token := corev1.VolumeMount{Name: "kube-api-access-7xk2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}
	data := corev1.VolumeMount{Name: "data", MountPath: "/data"}
	ctr := func(name string) corev1.Container {
		return corev1.Container{
			Name: name, Image: "registry.example/acme/app:1",
			Env: []corev1.EnvVar{
				{Name: "TOKEN", Value: secretValue},
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			},
			VolumeMounts: []corev1.VolumeMount{token, data},
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{ctr("setup")},
			Containers:     []corev1.Container{ctr("app"), ctr("side")},
			Volumes: []corev1.Volume{
				{Name: "kube-api-access-7xk2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}},
				}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

// TestFieldErrors covers every place where the generator refuses a pod: the
// error is a *policy.FieldError naming the field in the input's indices,
// of the expected kind, and it never contains a value of the pod.
func TestFieldErrors(t *testing.T) {
	src := errorSource()
	env := func(s *corev1.PodSpec, i int, e corev1.EnvVar) { s.Containers[i].Env = append(s.Containers[i].Env, e) }
	mount := func(s *corev1.PodSpec, i int, m corev1.VolumeMount) {
		s.Containers[i].VolumeMounts = append(s.Containers[i].VolumeMounts, m)
	}
	volume := func(s *corev1.PodSpec, v corev1.VolumeSource) {
		s.Volumes = append(s.Volumes, corev1.Volume{Name: "v", VolumeSource: v})
	}
	long := strings.Repeat(secretValue, 40)
	var imageErr *images.Error

	cases := map[string]struct {
		mod       func(s *corev1.PodSpec)
		wantField string
		wantKind  error
		wantAs    any
		wantMsg   string
	}{
		"no containers": {
			mod: func(s *corev1.PodSpec) { s.Containers = nil }, wantField: "spec.containers", wantKind: policy.ErrInvalidInput,
		},
		"duplicate container name": {
			mod: func(s *corev1.PodSpec) { s.Containers[1].Name = "setup" }, wantField: "spec.containers[1].name", wantKind: policy.ErrInvalidInput,
			wantMsg: `"setup"`,
		},
		"hostNetwork": {mod: func(s *corev1.PodSpec) { s.HostNetwork = true }, wantField: "spec.hostNetwork", wantKind: policy.ErrUnsupported},
		"hostPID":     {mod: func(s *corev1.PodSpec) { s.HostPID = true }, wantField: "spec.hostPID", wantKind: policy.ErrUnsupported},
		"localhost seccomp profile of the pod": {
			mod: func(s *corev1.PodSpec) {
				s.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptrTo("p.json")}}
			},
			wantField: "spec.securityContext.seccompProfile.type", wantKind: policy.ErrUnsupported, wantMsg: `"Localhost"`,
		},
		"localhost seccomp profile of a container": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptrTo("p.json")}}
			},
			wantField: "spec.containers[1].securityContext.seccompProfile.type", wantKind: policy.ErrUnsupported, wantMsg: `"Localhost"`,
		},
		"hostIPC": {mod: func(s *corev1.PodSpec) { s.HostIPC = true }, wantField: "spec.hostIPC", wantKind: policy.ErrUnsupported},
		"user namespace": {
			mod: func(s *corev1.PodSpec) { s.HostUsers = ptr.To(false) }, wantField: "spec.hostUsers", wantKind: policy.ErrUnsupported,
		},
		"ephemeral container": {
			mod: func(s *corev1.PodSpec) {
				s.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "registry.example/acme/app:1"}}}
			},
			wantField: "spec.ephemeralContainers", wantKind: policy.ErrUnsupported,
		},
		"setHostnameAsFQDN": {
			mod: func(s *corev1.PodSpec) { s.SetHostnameAsFQDN = ptr.To(true) }, wantField: "spec.setHostnameAsFQDN", wantKind: policy.ErrUnsupported,
		},
		"hostPath volume": {
			mod: func(s *corev1.PodSpec) {
				volume(s, corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}})
			},
			wantField: "spec.volumes[2].hostPath", wantKind: policy.ErrUnsupported, wantMsg: `volume "v"`,
		},
		"nfs volume": {
			mod: func(s *corev1.PodSpec) {
				volume(s, corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: "/export"}})
			},
			wantField: "spec.volumes[2].nfs", wantKind: policy.ErrUnsupported,
		},
		"volume without source": {
			mod: func(s *corev1.PodSpec) { volume(s, corev1.VolumeSource{}) }, wantField: "spec.volumes[2]", wantKind: policy.ErrUnsupported,
		},
		"unresolvable image": {
			mod:       func(s *corev1.PodSpec) { s.Containers[1].Image = "registry.example/acme/missing:1" },
			wantField: "spec.containers[1].image", wantKind: images.ErrNotFound, wantAs: &imageErr, wantMsg: `"registry.example/acme/missing:1"`,
		},
		"image accounts unavailable": {
			mod:       func(s *corev1.PodSpec) { s.InitContainers[0].Image = "registry.example/acme/no-accounts:1" },
			wantField: "spec.initContainers[0].image", wantKind: images.ErrNotFound, wantAs: &imageErr,
		},
		"image user unknown": {
			mod:       func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.example/acme/ghost-user:1" },
			wantField: "spec.containers[0].image", wantKind: policy.ErrInvalidInput, wantMsg: `"ghost"`,
		},
		"image group unknown": {
			mod:       func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.example/acme/ghost-group:1" },
			wantField: "spec.containers[0].image", wantKind: policy.ErrInvalidInput, wantMsg: `"ghosts"`,
		},
		"image reference not parseable": {
			mod:       func(s *corev1.PodSpec) { s.Containers[1].Image = "Not An Image!" },
			wantField: "spec.containers[1].image", wantKind: policy.ErrInvalidInput,
		},
		"no command": {
			mod:       func(s *corev1.PodSpec) { s.Containers[1].Image = "registry.example/acme/nocmd:1" },
			wantField: "spec.containers[1].command", wantKind: policy.ErrInvalidInput,
		},
		"subPath with ..": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].VolumeMounts[1].SubPath = "a/../../" + secretValue
			},
			wantField: "spec.containers[1].volumeMounts[1].subPath", wantKind: policy.ErrInvalidInput,
		},
		"absolute subPath": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].VolumeMounts[1].SubPath = "/" + secretValue
			},
			wantField: "spec.containers[1].volumeMounts[1].subPath", wantKind: policy.ErrInvalidInput,
		},
		"subPathExpr of an unbounded value": {
			mod: func(s *corev1.PodSpec) {
				env(s, 1, corev1.EnvVar{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}})
				mount(s, 1, corev1.VolumeMount{Name: "data", MountPath: "/x", SubPathExpr: secretValue + "$(S)"})
			},
			wantField: "spec.containers[1].volumeMounts[2].subPathExpr", wantKind: policy.ErrUnsupported, wantMsg: "$(S)",
		},
		"subPathExpr that leaves the volume": {
			mod: func(s *corev1.PodSpec) {
				mount(s, 1, corev1.VolumeMount{Name: "data", MountPath: "/x", SubPathExpr: "$(TOKEN)/../.."})
			},
			wantField: "spec.containers[1].volumeMounts[2].subPathExpr", wantKind: policy.ErrInvalidInput,
		},
		"envFrom prefix": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].EnvFrom = []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "a"}}},
					{Prefix: "1=" + secretValue, SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}}},
				}
			},
			wantField: "spec.containers[1].envFrom[1].prefix", wantKind: policy.ErrInvalidInput,
		},
		"env name": {
			mod:       func(s *corev1.PodSpec) { env(s, 0, corev1.EnvVar{Name: "A=" + secretValue, Value: "x"}) },
			wantField: "spec.containers[0].env[2].name", wantKind: policy.ErrInvalidInput,
		},
		"env fieldRef": {
			mod: func(s *corev1.PodSpec) {
				env(s, 0, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.volumes"}}})
			},
			wantField: "spec.containers[0].env[2].valueFrom.fieldRef.fieldPath", wantKind: policy.ErrUnsupported, wantMsg: `"spec.volumes"`,
		},
		"env valueFrom without source": {
			mod:       func(s *corev1.PodSpec) { env(s, 1, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{}}) },
			wantField: "spec.containers[1].env[2].valueFrom", wantKind: policy.ErrUnsupported,
		},
		"privileged without privilege escalation": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false)}
			},
			wantField: "spec.containers[1].securityContext.allowPrivilegeEscalation", wantKind: policy.ErrInvalidInput,
		},
		"mount of a missing volume": {
			mod:       func(s *corev1.PodSpec) { mount(s, 0, corev1.VolumeMount{Name: "nope", MountPath: "/nope"}) },
			wantField: "spec.containers[0].volumeMounts[2].name", wantKind: policy.ErrInvalidInput, wantMsg: `"nope"`,
		},
		"relative mount path": {
			mod: func(s *corev1.PodSpec) {
				s.InitContainers[0].VolumeMounts = append(s.InitContainers[0].VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "rel"})
			},
			wantField: "spec.initContainers[0].volumeMounts[2].mountPath", wantKind: policy.ErrInvalidInput,
		},
		"policy line too long: env value": {
			mod:       func(s *corev1.PodSpec) { env(s, 1, corev1.EnvVar{Name: "BLOB", Value: long}) },
			wantField: "spec.containers[1].env[2].value", wantKind: policy.ErrUnsupported,
		},
		"policy line too long: argument": {
			mod:       func(s *corev1.PodSpec) { s.Containers[0].Args = []string{"--a", long} },
			wantField: "spec.containers[0].args[1]", wantKind: policy.ErrUnsupported,
		},
		"policy line too long: expanded argument": {
			mod: func(s *corev1.PodSpec) {
				env(s, 0, corev1.EnvVar{Name: "HALF", Value: long[:600]})
				s.Containers[0].Args = []string{"$(HALF)$(HALF)"}
			},
			wantField: "spec.containers[0].env[2].value", wantKind: policy.ErrUnsupported,
		},
		"policy line too long: probe": {
			mod: func(s *corev1.PodSpec) {
				s.Containers[1].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/check", long}}}}
			},
			wantField: "spec.containers[1].readinessProbe.exec.command[1]", wantKind: policy.ErrUnsupported,
		},
		"policy line too long: image env": {
			mod:       func(s *corev1.PodSpec) { s.InitContainers[0].Image = "registry.example/acme/long-env:1" },
			wantField: "spec.initContainers[0].image", wantKind: policy.ErrUnsupported,
		},
	}
	for name, tc := range cases {
		for _, admitted := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "/workload", true: "/admitted pod"}[admitted], func(t *testing.T) {
				pod := errorPod()
				tc.mod(&pod.Spec)
				in := policy.GenerateInput{Images: src}
				if admitted {
					in.Pod = pod
				} else {
					in.Workload = &policy.Workload{Kind: policy.KindPod, Name: pod.Name, Namespace: pod.Namespace,
						Template: corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}}
				}
				_, err := policy.Generate(t.Context(), in)
				require.Error(t, err)
				var fe *policy.FieldError
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, tc.wantField, fe.Field)
				require.ErrorIs(t, err, tc.wantKind)
				if tc.wantAs != nil {
					require.ErrorAs(t, err, tc.wantAs)
				}
				assert.True(t, strings.HasPrefix(err.Error(), tc.wantField+": "), err.Error())
				assert.Contains(t, err.Error(), tc.wantMsg)
				assert.NotContains(t, err.Error(), secretValue)
				assert.NotContains(t, err.Error(), "hunter2")
			})
		}
	}
}

// TestGenerateCallerErrors: misuse of Generate is ErrInvalidInput without a
// field (the pod is not at fault).
func TestGenerateCallerErrors(t *testing.T) {
	pod := errorPod()
	w := &policy.Workload{Kind: policy.KindPod, Name: "p", Template: corev1.PodTemplateSpec{Spec: pod.Spec}}
	for name, in := range map[string]policy.GenerateInput{
		"no image source":          {Pod: pod},
		"neither workload nor pod": {Images: errorSource()},
		"both workload and pod":    {Pod: pod, Workload: w, Images: errorSource()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := policy.Generate(t.Context(), in)
			require.ErrorIs(t, err, policy.ErrInvalidInput)
			var fe *policy.FieldError
			assert.NotErrorAs(t, err, &fe, "caller error with a field")
		})
	}
}

// TestFieldErrorsGoodBase makes sure the cases above fail for their
// modification: the unmodified pod generates.
func TestFieldErrorsGoodBase(t *testing.T) {
	_, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: errorPod(), Images: errorSource()})
	require.NoError(t, err)
}

func ptrTo[T any](v T) *T { return &v }
