package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
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

// rewriteProbes points the kubelet's HTTP and TCP probes of ports the mesh
// proxy redirects at the proxy's probe port (meshconfig.ProbePort), as
// Istio does: a plain probe from the node could not pass the proxy's TLS.
// It returns the probes the proxy runs for them on localhost and records
// the original handlers in rec, so strip restores them exactly. Probes of
// plain (#true) ports, of another host, exec and gRPC probes stay as they
// are (a gRPC probe of a redirected port fails: give it a #true port).
func rewriteProbes(spec *corev1.PodSpec, mesh *meshconfig.Config, rec *Record) ([]meshconfig.Probe, error) {
	plain := map[uint16]bool{}
	for _, in := range mesh.Ingress {
		if in.Mode == meshconfig.IngressPlain {
			plain[in.Port] = true
		}
	}
	var out []meshconfig.Probe
	for _, pc := range probedContainers(spec) {
		for _, k := range probeKinds(pc.c) {
			pr := k.probe
			if pr == nil {
				continue
			}
			field := fmt.Sprintf("%s.%sProbe", pc.field, k.kind)
			name := pc.c.Name + "-" + k.kind
			var mp meshconfig.Probe
			switch {
			case pr.HTTPGet != nil && pr.HTTPGet.Host == "":
				port, err := probePort(pc.c, pr.HTTPGet.Port, field+".httpGet.port")
				if err != nil {
					return nil, err
				}
				path := pr.HTTPGet.Path
				if path == "" {
					path = "/"
				}
				if err := meshconfig.CheckProbePath(path); err != nil {
					return nil, deny(DenyMeshAnnotation, field+".httpGet.path", "the mesh proxy runs this probe for the kubelet: %v", err)
				}
				kind := meshconfig.ProbeHTTP
				if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
					kind = meshconfig.ProbeHTTPS
				}
				mp = meshconfig.Probe{Name: name, Kind: kind, Port: port, Path: path}
			case pr.TCPSocket != nil && pr.TCPSocket.Host == "":
				port, err := probePort(pc.c, pr.TCPSocket.Port, field+".tcpSocket.port")
				if err != nil {
					return nil, err
				}
				mp = meshconfig.Probe{Name: name, Kind: meshconfig.ProbeTCP, Port: port}
			default:
				continue
			}
			if plain[mp.Port] {
				continue
			}
			if rec.Probes == nil {
				rec.Probes = map[string]corev1.ProbeHandler{}
			}
			rec.Probes[name] = *pr.ProbeHandler.DeepCopy()
			pr.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path:   meshconfig.ProbePathPrefix + name,
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
