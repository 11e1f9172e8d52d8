package inject

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

func probePod() *corev1.Pod {
	pod := basePod()
	pod.Annotations = map[string]string{meshconfig.AnnotationIngress: "health#9090#true##web#8443#false"}
	app := &pod.Spec.Containers[0]
	app.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "health", ContainerPort: 9090}}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready?full=1", Port: intstr.FromString("http")}}, PeriodSeconds: 3}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	app.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	other := &pod.Spec.Containers[1]
	other.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(9090)}}}
	other.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8443), Scheme: corev1.URISchemeHTTPS}}}
	other.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 7070}}}
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "sidecar", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6000), Host: "10.0.0.9"}}},
	}}
	return pod
}

func TestInjectRewritesProbes(t *testing.T) {
	pod := probePod()
	out, err := Inject(pod, testConfig)
	require.NoError(t, err)

	rewritten := func(name string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/app-health/" + name, Port: intstr.FromInt32(15021), Scheme: corev1.URISchemeHTTP,
		}}
	}
	app := findContainer(out.Spec.Containers, "app")
	assert.Equal(t, rewritten("app-readiness"), app.ReadinessProbe.ProbeHandler, "named port of an mTLS port")
	assert.Equal(t, int32(3), app.ReadinessProbe.PeriodSeconds, "timing kept")
	assert.Equal(t, rewritten("app-liveness"), app.LivenessProbe.ProbeHandler, "tcp on an mTLS port")
	assert.Equal(t, pod.Spec.Containers[0].StartupProbe, app.StartupProbe, "exec probes run in the container")
	other := findContainer(out.Spec.Containers, "other")
	assert.Equal(t, pod.Spec.Containers[1].ReadinessProbe, other.ReadinessProbe, "a #true port is not redirected")
	assert.Equal(t, rewritten("other-liveness"), other.LivenessProbe.ProbeHandler, "a #false port is redirected too")
	assert.Equal(t, pod.Spec.Containers[1].StartupProbe, other.StartupProbe, "gRPC stays")
	sidecar := findContainer(out.Spec.InitContainers, "sidecar")
	assert.Equal(t, pod.Spec.InitContainers[0].StartupProbe, sidecar.StartupProbe, "another host stays")

	proxy := findContainer(out.Spec.InitContainers, ProxyName)
	var probes string
	for _, e := range proxy.Env {
		if e.Name == meshconfig.EnvProbes {
			probes = e.Value
		}
	}
	assert.Equal(t, "app-liveness#tcp#8080##app-readiness#http#8080#/ready?full=1##other-liveness#https#8443#/", probes)
	parsed, err := meshconfig.ParseProbes(probes)
	require.NoError(t, err, "the proxy parses what the webhook wrote")
	assert.Len(t, parsed, 3)

	var rec Record
	require.NoError(t, json.Unmarshal([]byte(out.Annotations[AnnotationInjected]), &rec))
	assert.Equal(t, pod.Spec.Containers[0].ReadinessProbe.ProbeHandler, rec.Probes["app-readiness"], "the original, named port and all")

	again, err := Inject(out, testConfig)
	require.NoError(t, err)
	assert.Equal(t, out, again, "a second injection (reinvocation, /validate) gives the same pod")

	stripped := out.DeepCopy()
	require.NoError(t, strip(&stripped.ObjectMeta, &stripped.Spec))
	assert.Equal(t, pod.Spec.Containers, stripped.Spec.Containers, "strip restores the probes exactly")
}

func TestInjectProbesWithoutMesh(t *testing.T) {
	pod := probePod()
	pod.Annotations = map[string]string{meshconfig.AnnotationServiceMesh: meshconfig.ServiceMeshDisabled}
	out, err := Inject(pod, testConfig)
	require.NoError(t, err)
	assert.Equal(t, pod.Spec.Containers[0].ReadinessProbe, findContainer(out.Spec.Containers, "app").ReadinessProbe, "no proxy, nothing redirected")
}

func TestInjectProbeDenials(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate    func(*corev1.Pod)
		wantField string
		wantMsg   string
	}{
		"probe port declared": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 15021}} },
			wantField: "spec.containers[1].ports[0].containerPort",
			wantMsg:   "reserved for the service-mesh proxy's probes",
		},
		"ingress on the probe port": {
			mutate:    func(p *corev1.Pod) { p.Annotations[meshconfig.AnnotationIngress] = "x#15021#false" },
			wantField: "metadata.annotations[contrast.cc/servicemesh-ingress]",
			wantMsg:   "probe port",
		},
		"unknown named port": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[0].Ports = nil },
			wantField: "spec.containers[0].livenessProbe.httpGet.port",
			wantMsg:   `no port of the container is named "http"`,
		},
		"path with a space": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].LivenessProbe.HTTPGet.Path = "/a b"
			},
			wantField: "spec.containers[0].livenessProbe.httpGet.path",
			wantMsg:   "white space",
		},
	} {
		t.Run(name, func(t *testing.T) {
			pod := probePod()
			pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromString("http")}}}
			tc.mutate(pod)
			_, err := Inject(pod, testConfig)
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.wantField, de.Field)
			assert.Contains(t, de.Error(), tc.wantMsg)
		})
	}
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}
