package inject

import (
	"bytes"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// containerProbe is one probe of a container, by the name part the
// rewritten probe's path ends in (liveness, readiness, startup).
type containerProbe struct {
	kind  string
	probe *corev1.Probe
}

func probeKinds(c *corev1.Container) []containerProbe {
	return []containerProbe{{"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}, {"startup", c.StartupProbe}}
}

// probedContainer is a container that may have probes, with its field path.
type probedContainer struct {
	field string
	c     *corev1.Container
}

// probedContainers are the containers that may have probes: the app's and
// the native sidecars among the init containers.
func probedContainers(spec *corev1.PodSpec) []probedContainer {
	var out []probedContainer
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, probedContainer{fmt.Sprintf("spec.initContainers[%d]", i), c})
		}
	}
	for i := range spec.Containers {
		out = append(out, probedContainer{fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i]})
	}
	return out
}

// rewriteProbes points the kubelet's HTTP, TCP and gRPC probes of ports the
// mesh proxy redirects at the proxy's probe port (meshconfig.ProbePort), as
// Istio does: a plain probe from the node could not pass the proxy's TLS.
// It returns the probes the proxy runs for them on localhost (an HTTP
// probe with its custom headers, a gRPC probe with its service) and
// records the original handlers in rec, so strip restores them exactly.
// Probes of plain (#true) ports, of another host and exec probes stay as
// they are. A probe the proxy could not run as the kubelet would (a path or
// header it cannot carry, an entry too long for the pod's policy) denies
// the pod, naming the field.
func rewriteProbes(spec *corev1.PodSpec, mesh *meshconfig.Config, rec *Record) ([]meshconfig.Probe, error) {
	plain := map[uint16]bool{}
	for _, in := range mesh.Ingress {
		if in.Mode == meshconfig.IngressPlain {
			plain[in.Port] = true
		}
	}
	var out []meshconfig.Probe
	envLen := 0
	for _, pc := range probedContainers(spec) {
		for _, k := range probeKinds(pc.c) {
			pr := k.probe
			if pr == nil {
				continue
			}
			field := fmt.Sprintf("%s.%sProbe", pc.field, k.kind)
			mp, parts, err := proxyProbe(pc.c, pr, field, pc.c.Name+"-"+k.kind, plain)
			if err != nil {
				return nil, err
			}
			if parts == nil {
				continue
			}
			if envLen, err = probesEnvFits(envLen, len(out) == 0, mp, parts); err != nil {
				return nil, err
			}
			if rec.Probes == nil {
				rec.Probes = map[string]corev1.ProbeHandler{}
			}
			rec.Probes[mp.Name] = *pr.ProbeHandler.DeepCopy()
			pr.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path:   meshconfig.ProbePathPrefix + mp.Name,
				Port:   intstr.FromInt32(int32(meshconfig.ProbePort)),
				Scheme: corev1.URISchemeHTTP,
			}}
			out = append(out, mp)
		}
	}
	if len(out) > 0 {
		for _, in := range mesh.Ingress {
			if in.Port == meshconfig.ProbePort {
				return nil, deny(DenyMeshAnnotation, "metadata.annotations["+meshconfig.AnnotationIngress+"]",
					"port %d is the mesh proxy's probe port, which the pod's probes need", meshconfig.ProbePort)
			}
		}
		if mesh.AdminPort == meshconfig.ProbePort {
			return nil, deny(DenyMeshAnnotation, "metadata.annotations["+meshconfig.AnnotationAdminPort+"]",
				"port %d is the mesh proxy's probe port, which the pod's probes need", meshconfig.ProbePort)
		}
	}
	return out, nil
}

// probePart is a field of a probe and what its value adds to the probe's
// entry (see probesEnvFits).
type probePart struct {
	field string
	entry meshconfig.Probe
}

// proxyProbe returns the probe the proxy runs for pr, named name, and the
// growing entries of its fields, or nil parts when the proxy does not run
// pr (exec, another host, a plain port: then nothing else of pr is
// checked, the kubelet runs it as written).
func proxyProbe(c *corev1.Container, pr *corev1.Probe, field, name string, plain map[uint16]bool) (meshconfig.Probe, []probePart, error) {
	switch {
	case pr.HTTPGet != nil && pr.HTTPGet.Host == "":
		port, err := probePort(c, pr.HTTPGet.Port, field+".httpGet.port")
		if err != nil || plain[port] {
			return meshconfig.Probe{}, nil, err
		}
		path := pr.HTTPGet.Path
		if path == "" {
			path = "/"
		}
		if err := meshconfig.CheckProbePath(path); err != nil {
			return meshconfig.Probe{}, nil, deny(DenyMeshAnnotation, field+".httpGet.path", "the mesh proxy runs this probe for the kubelet: %v", err)
		}
		kind := meshconfig.ProbeHTTP
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			kind = meshconfig.ProbeHTTPS
		}
		mp := meshconfig.Probe{Name: name, Kind: kind, Port: port, Path: path}
		parts := []probePart{{field + ".httpGet.path", mp}}
		hs := make([]meshconfig.ProbeHeader, len(pr.HTTPGet.HTTPHeaders))
		for j, h := range pr.HTTPGet.HTTPHeaders {
			hf := fmt.Sprintf("%s.httpGet.httpHeaders[%d]", field, j)
			if err := meshconfig.CheckProbeHeader(h.Name, h.Value); err != nil {
				return meshconfig.Probe{}, nil, deny(DenyMeshAnnotation, hf, "the mesh proxy runs this probe for the kubelet: %v", err)
			}
			hs[j] = meshconfig.ProbeHeader{Name: h.Name, Value: h.Value}
			// the entry with the headers up to this one, for the length
			// check (the entry sorts them, which does not change its
			// length)
			grown := mp
			grown.Headers = meshconfig.CanonicalHeaders(hs[:j+1])
			parts = append(parts, probePart{hf, grown})
		}
		mp.Headers = meshconfig.CanonicalHeaders(hs)
		return mp, parts, nil
	case pr.TCPSocket != nil && pr.TCPSocket.Host == "":
		port, err := probePort(c, pr.TCPSocket.Port, field+".tcpSocket.port")
		if err != nil || plain[port] {
			return meshconfig.Probe{}, nil, err
		}
		mp := meshconfig.Probe{Name: name, Kind: meshconfig.ProbeTCP, Port: port}
		return mp, []probePart{{field + ".tcpSocket.port", mp}}, nil
	case pr.GRPC != nil:
		port, err := probePort(c, intstr.FromInt32(pr.GRPC.Port), field+".grpc.port")
		if err != nil || plain[port] {
			return meshconfig.Probe{}, nil, err
		}
		kind := meshconfig.ProbeGRPC
		switch mode := ptr.Deref(pr.GRPC.Mode, corev1.GRPCProbeModePlaintext); mode {
		case corev1.GRPCProbeModePlaintext:
		case corev1.GRPCProbeModeTLS:
			kind = meshconfig.ProbeGRPCS
		default:
			return meshconfig.Probe{}, nil, deny(DenyMeshAnnotation, field+".grpc.mode", "the mesh proxy runs this probe for the kubelet: mode %q: want %s or %s", mode, corev1.GRPCProbeModePlaintext, corev1.GRPCProbeModeTLS)
		}
		mp := meshconfig.Probe{Name: name, Kind: kind, Port: port}
		parts := []probePart{{field + ".grpc.port", mp}}
		if pr.GRPC.Service != nil && *pr.GRPC.Service != "" {
			mp.Service = *pr.GRPC.Service
			if err := meshconfig.CheckProbeService(mp.Service); err != nil {
				return meshconfig.Probe{}, nil, deny(DenyMeshAnnotation, field+".grpc.service", "the mesh proxy runs this probe for the kubelet: %v", err)
			}
			parts = append(parts, probePart{field + ".grpc.service", mp})
		}
		return mp, parts, nil
	}
	return meshconfig.Probe{}, nil, nil
}

// maxProbesValue is the longest value of meshconfig.EnvProbes, in
// JSON-escaped bytes, that fits on its line of the pod's policy data
// (`"value":"…",`, see policy.RenderRego); a longer one would make the
// policy generator deny the pod, naming the proxy's environment instead of
// the probe.
const maxProbesValue = policy.MaxLineLength - len(`"value":"",`)

// probesEnvFits returns the length of the probes' environment value after
// adding a probe, whose entry grows by parts, to one of envLen bytes (first
// when it is the first), or denies the pod naming the field that makes the
// value too long for the policy.
func probesEnvFits(envLen int, first bool, mp meshconfig.Probe, parts []probePart) (int, error) {
	if !first {
		envLen += len("##")
	}
	for _, p := range parts {
		if n := envLen + jsonLen(p.entry.String()); n > maxProbesValue {
			return 0, deny(DenyPolicy, p.field,
				"the mesh proxy runs this probe for the kubelet, and the pod's probes would take %d characters of its environment, more than the %d a line of the pod's policy holds", n, maxProbesValue)
		}
	}
	return envLen + jsonLen(mp.String()), nil
}

// jsonLen is the length of s in a JSON string, as the policy writes it.
func jsonLen(s string) int {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return b.Len() - len(`""`+"\n")
}

// probePort resolves a probe's port, a number or the name of one of the
// container's ports, as the kubelet does.
func probePort(c *corev1.Container, p intstr.IntOrString, field string) (uint16, error) {
	if p.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return uint16(cp.ContainerPort), nil //nolint:gosec // the API server checks 1-65535
			}
		}
		return 0, deny(DenyMeshAnnotation, field, "no port of the container is named %q", p.StrVal)
	}
	if p.IntVal < 1 || p.IntVal > 65535 {
		return 0, deny(DenyMeshAnnotation, field, "port %d is not 1-65535", p.IntVal)
	}
	return uint16(p.IntVal), nil
}

// restoreProbes puts back the probe handlers rewriteProbes replaced.
func restoreProbes(spec *corev1.PodSpec, rec *Record) {
	if len(rec.Probes) == 0 {
		return
	}
	for _, pc := range probedContainers(spec) {
		for _, k := range probeKinds(pc.c) {
			if k.probe == nil {
				continue
			}
			if h, ok := rec.Probes[pc.c.Name+"-"+k.kind]; ok {
				k.probe.ProbeHandler = *h.DeepCopy()
			}
		}
	}
}
