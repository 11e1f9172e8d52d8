// Package inject turns a pod (an admitted pod or the pod template of a
// workload) into a Contrast pod: the Contrast runtime class, the Initializer
// as the first init container, the service-mesh proxy as a native sidecar, a
// memory-backed volume at /contrast, images pinned by digest and the Kata
// policy annotations.
//
// Inject and Template are pure: the webhook applies them to admitted
// pods and contrast generate to the pod templates of the YAML, so both sides
// compute the policy over the same final pod.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
	"github.com/contrast-cc/contrast/initializer/pv"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Names (DESIGN.md §4).
const (
	// LabelInject is the namespace opt-in ("enabled") and pod opt-out
	// ("disabled") label.
	LabelInject = "contrast.cc/inject"
	// AnnotationInjected records what was injected, so a re-invocation
	// strips it before injecting again.
	AnnotationInjected = "contrast.cc/injected"
	// AnnotationPodRole set to RoleCoordinator marks a Coordinator pod.
	AnnotationPodRole = "contrast.cc/pod-role"
	// AnnotationSkipInitializer set to "true" leaves out the Initializer.
	AnnotationSkipInitializer = "contrast.cc/skip-initializer"
	// AnnotationAllowPrivileged set to "true" admits privileged containers;
	// without it they are denied. The policy gives them what Kata gives a
	// privileged container in a confidential guest (webhook/policy/README.md).
	AnnotationAllowPrivileged = "contrast.cc/allow-privileged"

	RoleCoordinator = "coordinator"

	DefaultRuntimeClassName = "contrast-cc"

	InitializerName = "contrast-initializer"
	ProxyName       = "contrast-service-mesh"
	// ProxyIngressPort is the port the proxy's ingress listener takes in
	// every pod (initializer/internal/proxy.DefaultIngressPort): the
	// workload's containers must not use it.
	ProxyIngressPort = 15006
	VolumeName       = "contrast-secrets"
	MountPath        = "/contrast"

	// EnvCoordinatorHost is the Coordinator's mesh API address given to
	// the Initializer.
	EnvCoordinatorHost = initenv.EnvCoordinatorHost

	// Simulated platforms (DESIGN.md §7): the Initializer reads the pod's
	// initdata annotation through a downward-API volume and the simulated
	// device file from a Secret of the pod's namespace.
	SimInitDataVolumeName = "contrast-sim-initdata"
	SimDeviceVolumeName   = "contrast-sim-device"
	SimInitDataMountPath  = "/contrast-sim/pod"
	SimDeviceMountPath    = "/contrast-sim/device"
	// SimInitDataFile and SimDeviceFile are the files the Initializer reads.
	SimInitDataFile = SimInitDataMountPath + "/initdata"
	SimDeviceFile   = SimDeviceMountPath + "/" + SimDeviceSecretKey
	// DefaultSimDeviceSecret is the Secret holding the simulated device
	// file; SimDeviceSecretKey its key.
	DefaultSimDeviceSecret = "contrast-sim-device" //nolint:gosec // a Secret's name, not a credential
	SimDeviceSecretKey     = "device.json"
)

// Config configures the injection.
type Config struct {
	// RuntimeClassName is the Contrast runtime class (default contrast-cc).
	RuntimeClassName string
	// InitializerImage is the Initializer image, pinned by digest.
	InitializerImage string
	// ProxyImage is the service-mesh proxy image, pinned by digest.
	ProxyImage string
	// CoordinatorAddress is host:port of the Coordinator's mesh API.
	CoordinatorAddress string
	// Platform is the TEE of the pods (snp, tdx, or snp-simulated for
	// runc pods that stand in for Kata VMs).
	Platform attest.Platform
	// CoordinatorPolicyHashes are the policy hashes (32 bytes each) of
	// the Coordinator the Initializer accepts, and
	// CoordinatorReferenceValues the reference values its evidence must
	// meet. Both are injected as env, so the pod's policy covers them.
	CoordinatorPolicyHashes    [][]byte
	CoordinatorReferenceValues initenv.ReferenceValues
	// SimDeviceSecret is the Secret, in each opted-in namespace, holding
	// the simulated device file (simulated platforms only; default
	// DefaultSimDeviceSecret).
	SimDeviceSecret string
	// CoordinatorOnly mutates only Coordinator pods, without the
	// Initializer's expectations above (which name the Coordinator's own
	// policy hash, so contrast generate computes that policy first); any
	// other pod is refused.
	CoordinatorOnly bool
}

// Initializer returns the Initializer's configuration as injected.
func (c *Config) Initializer() *initenv.Config {
	ic := &initenv.Config{
		CoordinatorAddress:         c.CoordinatorAddress,
		Platform:                   c.Platform,
		CoordinatorPolicyHashes:    c.CoordinatorPolicyHashes,
		CoordinatorReferenceValues: c.CoordinatorReferenceValues,
	}
	if c.Platform.Simulated() {
		ic.SimDeviceFile, ic.SimInitDataFile = SimDeviceFile, SimInitDataFile
	}
	return ic
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.RuntimeClassName == "" {
		c.RuntimeClassName = DefaultRuntimeClassName
	}
	for _, f := range []struct{ name, v string }{{"initializer image", c.InitializerImage}, {"proxy image", c.ProxyImage}} {
		if f.v == "" {
			return fmt.Errorf("%s is required", f.name)
		}
		if err := CheckPinnedImage(f.v); err != nil {
			return fmt.Errorf("%s %q: %w", f.name, f.v, err)
		}
	}
	if c.CoordinatorAddress == "" {
		return errors.New("coordinator address is required")
	}
	if c.Platform.Simulated() {
		if c.SimDeviceSecret == "" {
			c.SimDeviceSecret = DefaultSimDeviceSecret
		}
		if msgs := validation.IsDNS1123Subdomain(c.SimDeviceSecret); len(msgs) > 0 {
			return fmt.Errorf("simulated device Secret %q: %s", c.SimDeviceSecret, strings.Join(msgs, "; "))
		}
	} else if c.SimDeviceSecret != "" {
		return fmt.Errorf("simulated device Secret %q with the real platform %q: simulated devices never mix with real ones", c.SimDeviceSecret, c.Platform)
	}
	if c.CoordinatorOnly {
		if c.Platform != "" || len(c.CoordinatorPolicyHashes) > 0 || c.SimDeviceSecret != "" {
			return errors.New("a Coordinator-only configuration has no Initializer expectations")
		}
		return nil
	}
	// the same validation as the Initializer's, so a webhook never injects
	// an environment its Initializer refuses
	if err := c.Initializer().Validate(); err != nil {
		return fmt.Errorf("the Initializer's configuration: %w", err)
	}
	return nil
}

// CheckPinnedImage checks that image is a complete reference pinned by a
// SHA-256 digest: registry/repository[:tag]@sha256:<64 hex digits>, parsed
// strictly by go-containerregistry (no implied registry or library/).
func CheckPinnedImage(image string) error {
	d, err := name.NewDigest(image, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("must be pinned by digest (registry/repository@sha256:<64 hex digits>): %w", err)
	}
	if !strings.HasPrefix(d.DigestStr(), "sha256:") {
		return fmt.Errorf("must be pinned by a sha256 digest, not %s", d.DigestStr())
	}
	return nil
}

// DenyCode classifies a denial.
type DenyCode string

// Denial codes.
const (
	DenyRuntimeClass   DenyCode = "runtime-class"
	DenyHostNamespace  DenyCode = "host-namespace"
	DenyPrivileged     DenyCode = "privileged"
	DenyMeshAnnotation DenyCode = "mesh-annotation"
	DenyReserved       DenyCode = "reserved-name"
	DenyInjection      DenyCode = "injection-record"
	DenyImage          DenyCode = "image"
	DenyPolicy         DenyCode = "policy"
	DenyPolicySize     DenyCode = "policy-size"
)

// ErrDenied is wrapped by every DenyError.
var ErrDenied = errors.New("pod denied")

// DenyError is a reason to deny a pod. It names the field; it never contains
// a secret value.
type DenyError struct {
	// Code classifies the denial (a bounded metric label).
	Code DenyCode
	// Field is the path of the offending field in the pod, e.g.
	// spec.containers[1].securityContext.privileged.
	Field  string
	Reason string
	Err    error
}

func (e *DenyError) Error() string {
	msg := e.Field + ": " + e.Reason
	if e.Err != nil {
		detail := e.Err.Error()
		var fe *policy.FieldError
		if errors.As(e.Err, &fe) && fe.Error() == detail {
			// e.Field names the field (in the submitted pod's indices)
			detail = fe.Detail()
		}
		if e.Reason == "" {
			return e.Field + ": " + detail
		}
		msg += ": " + detail
	}
	return msg
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DenyError) Is(target error) bool { return target == ErrDenied }

func (e *DenyError) Unwrap() error { return e.Err }

func deny(code DenyCode, field, format string, args ...any) *DenyError {
	return &DenyError{Code: code, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Record is the value of AnnotationInjected.
type Record struct {
	InitContainers []string `json:"initContainers,omitempty"`
	Volumes        []string `json:"volumes,omitempty"`
	// PersistentVolumes are the encrypted volumes whose mounts were
	// rewritten to their shared emptyDir (see encryptVolumes).
	PersistentVolumes []string `json:"persistentVolumes,omitempty"`
	// Probes are the original handlers of the probes rewritten to the mesh
	// proxy's probe port, by "<container>-<kind>" (see rewriteProbes).
	Probes map[string]corev1.ProbeHandler `json:"probes,omitempty"`
}

// literalEnv is the variable name=value of an injected container, written
// so that the container sees value as it is: the kubelet expands $(VAR)
// references in a value and turns "$$" into "$" (and the policy generator
// does the same), so every '$' is doubled. A probe path such as
// "/a$$b" or "/$(HOME)" would otherwise reach the proxy as "/a$b" or
// expanded. Values without '$' are unchanged.
func literalEnv(name, value string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, Value: strings.ReplaceAll(value, "$", "$$")}
}

// Inject returns a copy of pod with the Contrast additions. A previous
// injection recorded in AnnotationInjected is stripped first.
func Inject(pod *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	if err := Template(&out.ObjectMeta, &out.Spec, cfg); err != nil {
		return nil, err
	}
	return out, nil
}

// Template applies the injection in place to the metadata and spec of a
// pod or pod template. cfg must have been validated.
func Template(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config) error {
	if err := strip(meta, spec); err != nil {
		return err
	}
	return template(meta, spec, cfg, podClaimTemplates(meta, spec))
}

// template injects into a spec without a previous injection. tmpls are the
// claim templates of the pod's StatefulSet (see persistentVolumes).
func template(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config, tmpls claimTemplates) error {
	if err := check(meta, spec, cfg); err != nil {
		return err
	}
	ann := meta.Annotations
	coordinator := ann[AnnotationPodRole] == RoleCoordinator
	mesh, err := meshconfig.Parse(ann)
	if err != nil {
		var me *meshconfig.Error
		if errors.As(err, &me) {
			return &DenyError{Code: DenyMeshAnnotation, Field: fmt.Sprintf("metadata.annotations[%s]", me.Annotation), Err: err}
		}
		return &DenyError{Code: DenyMeshAnnotation, Field: "metadata.annotations", Err: err}
	}

	spec.RuntimeClassName = ptr.To(cfg.RuntimeClassName)
	if coordinator {
		return nil
	}
	if cfg.CoordinatorOnly {
		return errors.New("not a Coordinator pod: this configuration mutates only Coordinator pods (the Initializer's expectations of the Coordinator are not set)")
	}
	withInitializer := ann[AnnotationSkipInitializer] != "true"
	withProxy := !mesh.Disabled
	if !withInitializer && withProxy {
		return deny(DenyMeshAnnotation, "metadata.annotations["+AnnotationSkipInitializer+"]",
			"the service-mesh proxy needs the Initializer's certificate: also set %s: %s", meshconfig.AnnotationServiceMesh, meshconfig.ServiceMeshDisabled)
	}
	if !withInitializer {
		if vols, _ := persistentVolumes(spec, tmpls); len(vols) > len(HostSharedVolumes(ann)) {
			return deny(DenyVolume, "metadata.annotations["+AnnotationSkipInitializer+"]",
				"the Initializer encrypts the pod's persistent volumes: without it, name them in %s (not confidential)", AnnotationHostSharedVolumes)
		}
		return nil
	}

	rec := Record{Volumes: []string{VolumeName}}
	encrypted, err := encryptVolumes(meta, spec, tmpls)
	if err != nil {
		return err
	}
	for _, v := range encrypted {
		rec.Volumes = append(rec.Volumes, v.SharedVolumeName())
		rec.PersistentVolumes = append(rec.PersistentVolumes, v.Name)
	}
	mount := corev1.VolumeMount{Name: VolumeName, MountPath: MountPath}
	ienv, err := cfg.Initializer().Env()
	if err != nil {
		return err
	}
	env := make([]corev1.EnvVar, len(ienv))
	for i, e := range ienv {
		env[i] = literalEnv(e.Name, e.Value)
	}
	initMounts := []corev1.VolumeMount{mount}
	var simVolumes []corev1.Volume
	if cfg.Platform.Simulated() {
		initMounts = append(initMounts,
			corev1.VolumeMount{Name: SimInitDataVolumeName, MountPath: SimInitDataMountPath, ReadOnly: true},
			corev1.VolumeMount{Name: SimDeviceVolumeName, MountPath: SimDeviceMountPath, ReadOnly: true})
		simVolumes = simulatedVolumes(cfg)
		rec.Volumes = append(rec.Volumes, SimInitDataVolumeName, SimDeviceVolumeName)
	}
	var injected []corev1.Container
	injected = append(injected, corev1.Container{
		Name:                     InitializerName,
		Image:                    cfg.InitializerImage,
		Env:                      env,
		VolumeMounts:             initMounts,
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	})
	if len(encrypted) > 0 {
		var fsGroup *int64
		if spec.SecurityContext != nil {
			fsGroup = spec.SecurityContext.FSGroup
		}
		initializerVolumes(&injected[0], encrypted, fsGroup)
	}
	rec.InitContainers = append(rec.InitContainers, InitializerName)
	if withProxy {
		if mesh.Probes, err = rewriteProbes(spec, mesh, &rec); err != nil {
			return err
		}
		var env []corev1.EnvVar
		for _, e := range []corev1.EnvVar{
			{Name: meshconfig.EnvIngress, Value: mesh.IngressString()},
			{Name: meshconfig.EnvEgress, Value: mesh.EgressString()},
			{Name: meshconfig.EnvAdminPort, Value: mesh.AdminPortString()},
			{Name: meshconfig.EnvProbes, Value: mesh.ProbesString()},
		} {
			if e.Value != "" {
				env = append(env, literalEnv(e.Name, e.Value))
			}
		}
		injected = append(injected, corev1.Container{
			Name:          ProxyName,
			Image:         cfg.ProxyImage,
			Env:           env,
			RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
			VolumeMounts:  []corev1.VolumeMount{{Name: VolumeName, MountPath: MountPath, ReadOnly: true}},
			SecurityContext: &corev1.SecurityContext{
				// the proxy redirects inbound traffic with nftables rules,
				// which needs NET_ADMIN as root (a pod-level runAsNonRoot
				// or runAsUser of the workload does not apply to it)
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}},
				RunAsUser:    ptr.To[int64](0),
				RunAsNonRoot: ptr.To(false),
			},
			// the ingress listener is up only once the rules are set and
			// the certificate is loaded: the workload's containers start
			// after that (a native sidecar's startup probe gates them)
			StartupProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(ProxyIngressPort)}},
				PeriodSeconds:    1,
				FailureThreshold: 120,
			},
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
		})
		rec.InitContainers = append(rec.InitContainers, ProxyName)
	}
	for i := range spec.InitContainers {
		spec.InitContainers[i].VolumeMounts = append(spec.InitContainers[i].VolumeMounts, mount)
	}
	for i := range spec.Containers {
		spec.Containers[i].VolumeMounts = append(spec.Containers[i].VolumeMounts, mount)
	}
	spec.InitContainers = append(injected, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name:         VolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}},
	})
	spec.Volumes = append(spec.Volumes, simVolumes...)
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", AnnotationInjected, err)
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[AnnotationInjected] = string(b)
	return nil
}

// simulatedVolumes are what the Initializer of a simulated pod needs to act
// as the hypervisor would: the pod's own initdata annotation (downward API),
// from which the simulated device derives HOST_DATA, and the simulated
// device file from a Secret of the pod's namespace. Both are in the final
// pod, so its policy covers them.
func simulatedVolumes(cfg Config) []corev1.Volume {
	return []corev1.Volume{
		{Name: SimInitDataVolumeName, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{
				Path:     "initdata",
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['" + policy.AnnotationInitData + "']"},
			}},
			DefaultMode: ptr.To[int32](0o444),
		}}},
		{Name: SimDeviceVolumeName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  cfg.SimDeviceSecret,
			Items:       []corev1.KeyToPath{{Key: SimDeviceSecretKey, Path: SimDeviceSecretKey}},
			DefaultMode: ptr.To[int32](0o400),
		}}},
	}
}

// strip removes a previous injection and the policy annotations.
func strip(meta *metav1.ObjectMeta, spec *corev1.PodSpec) error {
	for _, a := range []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy, policy.AnnotationPolicyHash} {
		delete(meta.Annotations, a)
	}
	v, ok := meta.Annotations[AnnotationInjected]
	if !ok {
		return nil
	}
	var rec Record
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return deny(DenyInjection, "metadata.annotations["+AnnotationInjected+"]", "not a record of a previous injection")
	}
	delete(meta.Annotations, AnnotationInjected)
	unencryptVolumes(spec, rec.PersistentVolumes)
	restoreProbes(spec, &rec)
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, func(c corev1.Container) bool {
		return slices.Contains(rec.InitContainers, c.Name)
	})
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		return slices.Contains(rec.Volumes, v.Name)
	})
	unmount := func(cs []corev1.Container) {
		for i := range cs {
			cs[i].VolumeMounts = slices.DeleteFunc(cs[i].VolumeMounts, func(m corev1.VolumeMount) bool {
				return slices.Contains(rec.Volumes, m.Name)
			})
			if len(cs[i].VolumeMounts) == 0 {
				cs[i].VolumeMounts = nil
			}
		}
	}
	unmount(spec.InitContainers)
	unmount(spec.Containers)
	if len(spec.InitContainers) == 0 {
		spec.InitContainers = nil
	}
	if len(spec.Volumes) == 0 {
		spec.Volumes = nil
	}
	return nil
}

// check denies pods Contrast cannot run confidentially or whose fields
// collide with the injection.
func check(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config) error {
	if rc := spec.RuntimeClassName; rc != nil && *rc != "" && *rc != cfg.RuntimeClassName {
		return deny(DenyRuntimeClass, "spec.runtimeClassName", "pod names runtime class %q, not the Contrast runtime class %q", *rc, cfg.RuntimeClassName)
	}
	switch {
	case spec.HostNetwork:
		return deny(DenyHostNamespace, "spec.hostNetwork", "host namespaces cannot be confidential")
	case spec.HostPID:
		return deny(DenyHostNamespace, "spec.hostPID", "host namespaces cannot be confidential")
	case spec.HostIPC:
		return deny(DenyHostNamespace, "spec.hostIPC", "host namespaces cannot be confidential")
	}
	allowPrivileged := meta.Annotations[AnnotationAllowPrivileged] == "true"
	for _, group := range []struct {
		field string
		cs    []corev1.Container
	}{{"spec.initContainers", spec.InitContainers}, {"spec.containers", spec.Containers}} {
		for i, c := range group.cs {
			field := fmt.Sprintf("%s[%d]", group.field, i)
			if isInjected(&c) {
				return deny(DenyReserved, field+".name", "%q is reserved for the container Contrast injects", c.Name)
			}
			if !allowPrivileged && policy.IsPrivileged(&c) {
				return deny(DenyPrivileged, field+".securityContext.privileged", "privileged containers are denied unless the pod has the annotation %s: \"true\"", AnnotationAllowPrivileged)
			}
			for j, p := range c.Ports {
				if p.ContainerPort == ProxyIngressPort && meta.Annotations[meshconfig.AnnotationServiceMesh] != meshconfig.ServiceMeshDisabled {
					return deny(DenyReserved, fmt.Sprintf("%s.ports[%d].containerPort", field, j), "port %d is reserved for the service-mesh proxy's ingress (or set %s: %s)", ProxyIngressPort, meshconfig.AnnotationServiceMesh, meshconfig.ServiceMeshDisabled)
				}
				if p.ContainerPort == int32(meshconfig.ProbePort) && meta.Annotations[meshconfig.AnnotationServiceMesh] != meshconfig.ServiceMeshDisabled {
					return deny(DenyReserved, fmt.Sprintf("%s.ports[%d].containerPort", field, j), "port %d is reserved for the service-mesh proxy's probes (or set %s: %s)", meshconfig.ProbePort, meshconfig.AnnotationServiceMesh, meshconfig.ServiceMeshDisabled)
				}
			}
			for j, m := range c.VolumeMounts {
				if m.MountPath == MountPath || strings.HasPrefix(m.MountPath, MountPath+"/") {
					return deny(DenyReserved, fmt.Sprintf("%s.volumeMounts[%d].mountPath", field, j), "%s is reserved for the files of the Initializer", MountPath)
				}
			}
		}
	}
	for i, v := range spec.Volumes {
		if v.Name == VolumeName || v.Name == SimInitDataVolumeName || v.Name == SimDeviceVolumeName || strings.HasPrefix(v.Name, pv.VolumePrefix) {
			return deny(DenyReserved, fmt.Sprintf("spec.volumes[%d].name", i), "%q is reserved for the volume Contrast injects", v.Name)
		}
	}
	return nil
}
