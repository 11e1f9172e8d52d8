package inject

import (
	"encoding/json"
	"strings"
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
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/ready?full=1", Port: intstr.FromString("http"),
		HTTPHeaders: []corev1.HTTPHeader{{Name: "x-token", Value: "a b#c,$(HOME)"}, {Name: "host", Value: "app.example"}, {Name: "X-Token", Value: "2"}},
	}}, PeriodSeconds: 3}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	app.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	other := &pod.Spec.Containers[1]
	// not carried, so not checked: a #true port's probe is the kubelet's
	other.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Port: intstr.FromInt32(9090), Path: "/a b", HTTPHeaders: []corev1.HTTPHeader{{Name: "X_Legacy", Value: "a\x01"}},
	}}}
	other.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8443), Scheme: corev1.URISchemeHTTPS}}}
	other.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 7070, Service: ptr.To("shop.Cart")}}}
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "sidecar", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6000), Host: "10.0.0.9"}}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 6001, Mode: ptr.To(corev1.GRPCProbeModeTLS)}}},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: ptr.To("")}}},
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
	assert.Equal(t, rewritten("app-readiness"), app.ReadinessProbe.ProbeHandler, "named port of an mTLS port, with headers")
	assert.Equal(t, int32(3), app.ReadinessProbe.PeriodSeconds, "timing kept")
	assert.Equal(t, rewritten("app-liveness"), app.LivenessProbe.ProbeHandler, "tcp on an mTLS port")
	assert.Equal(t, pod.Spec.Containers[0].StartupProbe, app.StartupProbe, "exec probes run in the container")
	other := findContainer(out.Spec.Containers, "other")
	assert.Equal(t, pod.Spec.Containers[1].ReadinessProbe, other.ReadinessProbe, "a #true port is not redirected")
	assert.Equal(t, rewritten("other-liveness"), other.LivenessProbe.ProbeHandler, "a #false port is redirected too")
	assert.Equal(t, rewritten("other-startup"), other.StartupProbe.ProbeHandler, "gRPC with a service")
	sidecar := findContainer(out.Spec.InitContainers, "sidecar")
	assert.Equal(t, pod.Spec.InitContainers[0].StartupProbe, sidecar.StartupProbe, "another host stays")
	assert.Equal(t, rewritten("sidecar-readiness"), sidecar.ReadinessProbe.ProbeHandler, "gRPC in mode TLS")
	assert.Equal(t, pod.Spec.InitContainers[0].LivenessProbe, sidecar.LivenessProbe, "gRPC of a #true port stays")

	proxy := findContainer(out.Spec.InitContainers, ProxyName)
	var probes string
	for _, e := range proxy.Env {
		if e.Name == meshconfig.EnvProbes {
			probes = e.Value
		}
	}
	assert.Equal(t, "sidecar-readiness#grpcs#6001##app-liveness#tcp#8080"+
		"##app-readiness#http#8080#/ready?full=1#Host:app.example,X-Token:a%20b%23c%2C%24(HOME),X-Token:2"+
		"##other-liveness#https#8443#/##other-startup#grpc#7070#shop.Cart", probes)
	parsed, err := meshconfig.ParseProbes(probes)
	require.NoError(t, err, "the proxy parses what the webhook wrote")
	require.Len(t, parsed, 5)
	assert.Equal(t, []meshconfig.ProbeHeader{{Name: "Host", Value: "app.example"}, {Name: "X-Token", Value: "a b#c,$(HOME)"}, {Name: "X-Token", Value: "2"}},
		parsed[2].Headers, "canonical names, sorted, the values of one name in their order")
	assert.Equal(t, meshconfig.Probe{Name: "other-startup", Kind: meshconfig.ProbeGRPC, Port: 7070, Service: "shop.Cart"}, parsed[4])

	var rec Record
	require.NoError(t, json.Unmarshal([]byte(out.Annotations[AnnotationInjected]), &rec))
	assert.Equal(t, pod.Spec.Containers[0].ReadinessProbe.ProbeHandler, rec.Probes["app-readiness"], "the original, named port and headers as written")
	assert.Equal(t, pod.Spec.Containers[1].StartupProbe.ProbeHandler, rec.Probes["other-startup"], "the original gRPC probe")

	again, err := Inject(out, testConfig)
	require.NoError(t, err)
	assert.Equal(t, out, again, "a second injection (reinvocation, /validate) gives the same pod")

	stripped := out.DeepCopy()
	require.NoError(t, strip(&stripped.ObjectMeta, &stripped.Spec))
	assert.Equal(t, pod.Spec.Containers, stripped.Spec.Containers, "strip restores the probes exactly")
	assert.Equal(t, pod.Spec.InitContainers, stripped.Spec.InitContainers, "and those of native sidecars")
}

func TestInjectProbesWithoutMesh(t *testing.T) {
	pod := probePod()
	pod.Annotations = map[string]string{meshconfig.AnnotationServiceMesh: meshconfig.ServiceMeshDisabled}
	out, err := Inject(pod, testConfig)
	require.NoError(t, err)
	assert.Equal(t, pod.Spec.Containers[0].ReadinessProbe, findContainer(out.Spec.Containers, "app").ReadinessProbe, "no proxy, nothing redirected")
}

func TestInjectProbeDenials(t *testing.T) {
	long := strings.Repeat("v", 900)
	for name, tc := range map[string]struct {
		mutate    func(*corev1.Pod)
		wantField string
		wantMsg   string
		wantCode  DenyCode
	}{
		"probe port declared": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 15021}} },
			wantField: "spec.containers[1].ports[0].containerPort",
			wantMsg:   "reserved for the service-mesh proxy's probes",
			wantCode:  DenyReserved,
		},
		"ingress on the probe port": {
			mutate:    func(p *corev1.Pod) { p.Annotations[meshconfig.AnnotationIngress] = "health#9090#true##x#15021#false" },
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
		"header name the API server refuses": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].ReadinessProbe.HTTPGet.HTTPHeaders = []corev1.HTTPHeader{{Name: "X-A", Value: "1"}, {Name: "X_A", Value: "2"}}
			},
			wantField: "spec.containers[0].readinessProbe.httpGet.httpHeaders[1]",
			wantMsg:   `header name "X_A" must be letters, digits and '-'`,
		},
		"header value net/http does not send": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].ReadinessProbe.HTTPGet.HTTPHeaders = []corev1.HTTPHeader{{Name: "X-A", Value: "a\r\nX-B: b"}}
			},
			wantField: "spec.containers[0].readinessProbe.httpGet.httpHeaders[0]",
			wantMsg:   "value of header X-A must not contain control characters other than tab",
		},
		"gRPC port out of range": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[1].StartupProbe.GRPC.Port = 70000 },
			wantField: "spec.containers[1].startupProbe.grpc.port",
			wantMsg:   "port 70000 is not 1-65535",
		},
		"gRPC service not UTF-8": {
			mutate:    func(p *corev1.Pod) { p.Spec.Containers[1].StartupProbe.GRPC.Service = ptr.To("a\xff") },
			wantField: "spec.containers[1].startupProbe.grpc.service",
			wantMsg:   "not valid UTF-8",
		},
		"gRPC mode unknown": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[1].StartupProbe.GRPC.Mode = ptr.To(corev1.GRPCProbeMode("QUIC"))
			},
			wantField: "spec.containers[1].startupProbe.grpc.mode",
			wantMsg:   `mode "QUIC": want Plaintext or TLS`,
		},
		"headers too long for the policy": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].ReadinessProbe.HTTPGet.HTTPHeaders = []corev1.HTTPHeader{{Name: "X-A", Value: "1"}, {Name: "X-B", Value: long}, {Name: "X-A", Value: long}}
			},
			wantField: "spec.containers[0].readinessProbe.httpGet.httpHeaders[2]",
			wantMsg:   "more than the 1012 a line of the pod's policy holds",
			wantCode:  DenyPolicy,
		},
		"gRPC service too long for the policy": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].ReadinessProbe.HTTPGet.HTTPHeaders = []corev1.HTTPHeader{{Name: "X-A", Value: long[:500]}}
				p.Spec.Containers[1].StartupProbe.GRPC.Service = ptr.To(long[:500])
			},
			wantField: "spec.containers[1].startupProbe.grpc.service",
			wantMsg:   "a line of the pod's policy holds",
			wantCode:  DenyPolicy,
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
			if tc.wantCode == "" {
				tc.wantCode = DenyMeshAnnotation
			}
			assert.Equal(t, tc.wantCode, de.Code)
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

// TestProbesEnvLimit checks maxProbesValue against the policy generator:
// probes whose entry takes exactly that many characters are admitted with
// their policy, one more character is denied at the probe's field, and an
// environment value one character longer is what the policy itself cannot
// hold.
// TestProbesEnvIsLiteral: a probe path with '$' reaches the proxy as
// written. The kubelet (and the policy generator, as the agent sees the
// value) expands $(VAR) and "$$" in env values, so the webhook doubles
// every '$'; the policy pins the value the proxy parses.
func TestProbesEnvIsLiteral(t *testing.T) {
	m := testMutator(t)
	pod := basePod()
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "HOME", Value: "/root"}}
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/a$$b/$(HOME)/$c", Port: intstr.FromInt32(8080),
	}}}
	out, res, err := m.MutatePod(t.Context(), pod, nil)
	require.NoError(t, err)
	const canonical = "app-readiness#http#8080#/a$$b/$(HOME)/$c"
	var raw string
	for _, e := range findContainer(out.Spec.InitContainers, ProxyName).Env {
		if e.Name == meshconfig.EnvProbes {
			raw = e.Value
		}
	}
	assert.Equal(t, "app-readiness#http#8080#/a$$$$b/$$(HOME)/$$c", raw, "every '$' doubled in the pod")
	var pinned []string
	for _, c := range res.Data.Containers {
		if c.Name != ProxyName {
			continue
		}
		for _, e := range c.Env {
			if e.Name == meshconfig.EnvProbes {
				pinned = append(pinned, e.Kind+" "+e.Value)
			}
		}
	}
	assert.Equal(t, []string{"exact " + canonical}, pinned, "the policy pins the value after the kubelet's expansion: the probe as written")
	probes, err := meshconfig.ParseProbes(canonical)
	require.NoError(t, err)
	assert.Equal(t, "/a$$b/$(HOME)/$c", probes[0].Path)
}

func TestProbesEnvLimit(t *testing.T) {
	m := testMutator(t)
	prefix := "app-readiness#http#8080#/#X-A:"
	withHeader := func(n int) *corev1.Pod {
		pod := basePod()
		pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/", Port: intstr.FromInt32(8080), HTTPHeaders: []corev1.HTTPHeader{{Name: "X-A", Value: strings.Repeat("v", n)}},
		}}}
		return pod
	}
	withEnv := func(n int) *corev1.Pod {
		pod := basePod()
		pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", Value: strings.Repeat("v", n)}}
		return pod
	}
	for name, tc := range map[string]struct {
		pod       *corev1.Pod
		wantField string
		wantCode  DenyCode
	}{
		"probes at the limit":             {pod: withHeader(maxProbesValue - len(prefix))},
		"probes one over":                 {pod: withHeader(maxProbesValue - len(prefix) + 1), wantField: "spec.containers[0].readinessProbe.httpGet.httpHeaders[0]", wantCode: DenyPolicy},
		"an env value at the limit":       {pod: withEnv(maxProbesValue)},
		"an env value one over the limit": {pod: withEnv(maxProbesValue + 1), wantField: "spec.containers[0].env[0].value", wantCode: DenyPolicy},
	} {
		t.Run(name, func(t *testing.T) {
			out, _, err := m.MutatePod(t.Context(), tc.pod, nil)
			if tc.wantField == "" {
				require.NoError(t, err)
				if tc.pod.Spec.Containers[0].ReadinessProbe != nil {
					env := map[string]string{}
					for _, e := range findContainer(out.Spec.InitContainers, ProxyName).Env {
						env[e.Name] = e.Value
					}
					assert.Len(t, env[meshconfig.EnvProbes], maxProbesValue)
				}
				return
			}
			var de *DenyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.wantField, de.Field)
			assert.Equal(t, tc.wantCode, de.Code)
			assert.Contains(t, de.Error(), "policy")
		})
	}
}
