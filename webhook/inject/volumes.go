package inject

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/initializer/pv"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// AnnotationHostSharedVolumes names, comma-separated, the persistent volumes
// of a pod that are mounted from the host's file system as Kubernetes mounts
// them (NOT confidential: the host reads and writes their data). Every other
// persistent volume is encrypted in the pod's TEE (see encryptVolumes).
const AnnotationHostSharedVolumes = policy.AnnotationHostSharedVolumes

// DenyVolume classifies denials of persistent volumes.
const DenyVolume DenyCode = "volume"

// claimTemplates are the names of a StatefulSet's volumeClaimTemplates,
// which its controller adds to each pod as persistentVolumeClaim volumes.
type claimTemplates []string

// podClaimTemplates are the claim templates of an admitted pod: the
// persistentVolumeClaim volumes whose claim the StatefulSet controller named
// <volume>-<pod name> for a pod it owns.
func podClaimTemplates(meta *metav1.ObjectMeta, spec *corev1.PodSpec) claimTemplates {
	if !slices.ContainsFunc(meta.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "StatefulSet" && o.Controller != nil && *o.Controller
	}) || meta.Name == "" {
		return nil
	}
	var names claimTemplates
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == v.Name+"-"+meta.Name {
			names = append(names, v.Name)
		}
	}
	return names
}

// persistentVolumes returns the persistent volumes of spec (claim templates
// first, as the StatefulSet controller adds them) with the claim each key is
// derived for, and the field of each.
func persistentVolumes(spec *corev1.PodSpec, tmpls claimTemplates) ([]pv.Volume, []string) {
	var vols []pv.Volume
	var fields []string
	for _, n := range tmpls {
		vols = append(vols, pv.Volume{Name: n, Claim: n})
		fields = append(fields, "spec.volumes")
		if i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == n }); i >= 0 {
			fields[len(fields)-1] = fmt.Sprintf("spec.volumes[%d]", i)
		}
	}
	for i, v := range spec.Volumes {
		if slices.Contains(tmpls, v.Name) {
			continue
		}
		switch {
		case v.PersistentVolumeClaim != nil:
			vols = append(vols, pv.Volume{Name: v.Name, Claim: v.PersistentVolumeClaim.ClaimName})
		case v.Ephemeral != nil:
			vols = append(vols, pv.Volume{Name: v.Name, Claim: v.Name})
		default:
			continue
		}
		fields = append(fields, fmt.Sprintf("spec.volumes[%d]", i))
	}
	return vols, fields
}

// HostSharedVolumes parses AnnotationHostSharedVolumes.
func HostSharedVolumes(ann map[string]string) []string {
	return policy.HostSharedVolumes(ann)
}

// encryptVolumes rewrites spec so that every persistent volume not named in
// AnnotationHostSharedVolumes is encrypted in the TEE: each container's
// mount of the volume becomes a mount of a memory emptyDir with
// host-to-container propagation, and the volume is given to the Initializer
// as a block device, which it opens and mounts on that emptyDir with
// bidirectional propagation. It returns the encrypted volumes, for the
// Initializer's environment. Ephemeral volumes are provisioned as block
// devices (their claim template is in the pod); the claims of
// persistentVolumeClaim volumes must be (see BlockClaimTemplates).
func encryptVolumes(meta *metav1.ObjectMeta, spec *corev1.PodSpec, tmpls claimTemplates) ([]pv.Volume, error) {
	vols, fields := persistentVolumes(spec, tmpls)
	shared := HostSharedVolumes(meta.Annotations)
	for _, n := range shared {
		if !slices.ContainsFunc(vols, func(v pv.Volume) bool { return v.Name == n }) {
			return nil, deny(DenyVolume, "metadata.annotations["+AnnotationHostSharedVolumes+"]", "names %q, which is not a persistentVolumeClaim or ephemeral volume of the pod", n)
		}
	}
	var encrypted []pv.Volume
	for k, v := range vols {
		if slices.Contains(shared, v.Name) {
			continue
		}
		if err := pv.Check(v); err != nil {
			return nil, &DenyError{Code: DenyVolume, Field: fields[k] + ".name", Reason: "cannot be encrypted", Err: err}
		}
		encrypted = append(encrypted, v)
	}
	if len(encrypted) == 0 {
		return nil, nil
	}
	for _, group := range []struct {
		field string
		cs    []corev1.Container
	}{{"spec.initContainers", spec.InitContainers}, {"spec.containers", spec.Containers}} {
		for i := range group.cs {
			c := &group.cs[i]
			field := fmt.Sprintf("%s[%d]", group.field, i)
			for j, d := range c.VolumeDevices {
				if slices.ContainsFunc(encrypted, func(v pv.Volume) bool { return v.Name == d.Name }) {
					return nil, deny(DenyVolume, fmt.Sprintf("%s.volumeDevices[%d]", field, j),
						"volume %q is encrypted by the Initializer and cannot also be a raw device of the container (or name it in %s: not confidential)", d.Name, AnnotationHostSharedVolumes)
				}
			}
			for j := range c.VolumeMounts {
				m := &c.VolumeMounts[j]
				k := slices.IndexFunc(encrypted, func(v pv.Volume) bool { return v.Name == m.Name })
				if k < 0 {
					continue
				}
				mf := fmt.Sprintf("%s.volumeMounts[%d]", field, j)
				if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
					return nil, deny(DenyVolume, mf+".mountPropagation", "an encrypted volume is mounted with host-to-container propagation from the Initializer; %q is not supported", *m.MountPropagation)
				}
				if m.SubPath != "" || m.SubPathExpr != "" {
					return nil, deny(DenyVolume, mf+".subPath", "subPath mounts of an encrypted volume are not supported (the kubelet creates the folder on the host, outside the encrypted file system)")
				}
				m.Name = encrypted[k].SharedVolumeName()
				m.MountPropagation = ptr.To(corev1.MountPropagationHostToContainer)
			}
		}
	}
	for i := range spec.Volumes {
		if e := spec.Volumes[i].Ephemeral; e != nil && e.VolumeClaimTemplate != nil &&
			slices.ContainsFunc(encrypted, func(v pv.Volume) bool { return v.Name == spec.Volumes[i].Name }) {
			e.VolumeClaimTemplate.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		}
	}
	for _, v := range encrypted {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         v.SharedVolumeName(),
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}},
		})
	}
	return encrypted, nil
}

// initializerVolumes gives the encrypted volumes to the Initializer: each as
// a block device and a bidirectional mount of its shared emptyDir. Opening
// dm-crypt devices and bidirectional propagation need a privileged
// container running as root; the policy pins the Initializer's image and
// arguments.
func initializerVolumes(c *corev1.Container, vols []pv.Volume, fsGroup *int64) {
	for _, v := range vols {
		c.VolumeDevices = append(c.VolumeDevices, corev1.VolumeDevice{Name: v.Name, DevicePath: v.DevicePath()})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{
			Name: v.SharedVolumeName(), MountPath: v.MountPath(),
			MountPropagation: ptr.To(corev1.MountPropagationBidirectional),
		})
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: pv.EnvVolumes, Value: pv.Format(vols)})
	if fsGroup != nil {
		c.Env = append(c.Env, corev1.EnvVar{Name: pv.EnvFSGroup, Value: strconv.FormatInt(*fsGroup, 10)})
	}
	// as root: a pod-level runAsUser or runAsNonRoot of the workload must
	// not apply to it (cryptsetup and mount(2) need root's capabilities)
	c.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false)}
}

// unencryptVolumes reverts encryptVolumes for the volumes of a recorded
// injection: the containers mount the persistent volumes again. The
// injected emptyDirs are removed with the other recorded volumes.
func unencryptVolumes(spec *corev1.PodSpec, names []string) {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			for j := range cs[i].VolumeMounts {
				m := &cs[i].VolumeMounts[j]
				if n, ok := strings.CutPrefix(m.Name, pv.VolumePrefix); ok && slices.Contains(names, n) {
					m.Name = n
					m.MountPropagation = nil
				}
			}
		}
	}
}

// mutateClaimTemplates sets volumeMode Block on the claim templates of a
// StatefulSet whose volumes the injection into its pod template tmpl
// encrypts (recorded in AnnotationInjected). The StatefulSet controller
// creates each pod's claims from them, so the claims are provisioned as
// block devices. contrast generate applies it to the StatefulSets it
// rewrites; a claim template that asks for volumeMode Filesystem is
// overridden (the pod's containers still see a file system).
func mutateClaimTemplates(tmpl *corev1.PodTemplateSpec, claims []corev1.PersistentVolumeClaim) error {
	v, ok := tmpl.Annotations[AnnotationInjected]
	if !ok {
		return nil
	}
	var rec Record
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return fmt.Errorf("reading the injection record: %w", err)
	}
	for i := range claims {
		if slices.Contains(rec.PersistentVolumes, claims[i].Name) {
			claims[i].Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		}
	}
	return nil
}

// BlockClaimTemplates sets volumeMode Block on the volumeClaimTemplates of
// st whose claims its pods mount as encrypted volumes, so that the
// StatefulSet controller creates them as block devices for the
// Initializer. It is the webhook's admission of StatefulSets: it injects
// into a copy of the pod template exactly as MutateWorkload does (the
// StatefulSet's claim templates are the pod's persistent volumes; the
// template's AnnotationHostSharedVolumes leaves volumes out) and applies
// the same claim-template rule, so the claims are those contrast generate
// writes. The pod template itself is left unchanged: pods are mutated at
// their own admission, where the policy is computed. A template that
// names volumeMode Filesystem (the API server's default) is overridden.
//
// It returns the names of the claim templates it changed. An error is the
// injection's (a DenyError names the template's field as for a pod): the
// StatefulSet is left unchanged, and its pods are denied at their own
// admission with the same reason.
func BlockClaimTemplates(st *appsv1.StatefulSet, cfg Config) ([]string, error) {
	if len(st.Spec.VolumeClaimTemplates) == 0 {
		return nil, nil
	}
	t := st.Spec.Template.DeepCopy()
	if err := strip(&t.ObjectMeta, &t.Spec); err != nil {
		return nil, err
	}
	tmpls := make(claimTemplates, 0, len(st.Spec.VolumeClaimTemplates))
	for _, c := range st.Spec.VolumeClaimTemplates {
		tmpls = append(tmpls, c.Name)
	}
	if err := template(&t.ObjectMeta, &t.Spec, cfg, tmpls); err != nil {
		return nil, err
	}
	// a shallow copy: mutateClaimTemplates replaces the volumeMode
	// pointers, it does not write through them
	claims := slices.Clone(st.Spec.VolumeClaimTemplates)
	if err := mutateClaimTemplates(t, claims); err != nil {
		return nil, err
	}
	var changed []string
	for i := range claims {
		c := &st.Spec.VolumeClaimTemplates[i]
		if ptr.Deref(claims[i].Spec.VolumeMode, "") == corev1.PersistentVolumeBlock && ptr.Deref(c.Spec.VolumeMode, "") != corev1.PersistentVolumeBlock {
			c.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
			changed = append(changed, c.Name)
		}
	}
	return changed, nil
}
