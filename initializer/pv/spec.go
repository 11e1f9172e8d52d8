// Package pv opens the encrypted persistent volumes of a confidential pod.
//
// The webhook gives each persistent volume (a PersistentVolumeClaim or an
// ephemeral volume) of a pod to the Initializer as a block device instead of
// mounting it in the containers that asked for it. The Initializer opens the
// device with dm-crypt/LUKS2 under a key derived from the workload secret,
// formats it (ext4) on first use and mounts it on a directory shared with
// the containers by mount propagation, so they see an ordinary directory and
// the host sees only ciphertext. The environment variable EnvVolumes names
// the volumes; this package parses it for both sides.
package pv

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Names shared by the webhook and the Initializer.
const (
	// EnvVolumes lists the encrypted volumes as volume:claim pairs
	// separated by commas.
	EnvVolumes = "CONTRAST_PERSISTENT_VOLUMES"
	// EnvFSGroup is the pod's fsGroup (decimal), if it has one: the root
	// folder of each opened volume gets that group, group-writable and
	// setgid, as the kubelet gives a volume it mounts.
	EnvFSGroup = "CONTRAST_PERSISTENT_VOLUMES_FS_GROUP"
	// DeviceDir holds the Initializer's block device of each volume,
	// DeviceDir/<volume>.
	DeviceDir = "/dev/contrast-pv"
	// MountDir holds the Initializer's mount of each volume,
	// MountDir/<volume>: a memory emptyDir with bidirectional mount
	// propagation, which the workload's containers mount with
	// host-to-container propagation.
	MountDir = "/contrast-pv"
	// VolumePrefix is the prefix of the name of the emptyDir volume that
	// shares the mount of each encrypted volume with the containers.
	VolumePrefix = "contrast-pv-"
	// KeyLabelPrefix is the HKDF info prefix of a volume's key: the key of
	// the volume of claim c is HKDF-SHA256(workload secret, "PV: " + c).
	KeyLabelPrefix = "PV: "
)

// Volume is one encrypted volume of a pod.
type Volume struct {
	// Name is the pod's volume name (a DNS label).
	Name string
	// Claim names the claim the key is derived for: the claim name of a
	// persistentVolumeClaim volume, the claim template's name for a
	// StatefulSet's volumeClaimTemplates entry and the volume name for an
	// ephemeral volume (their claims are named after the pod, which the
	// policy cannot pin).
	Claim string
}

// DevicePath is where the Initializer finds the volume's block device.
func (v Volume) DevicePath() string { return DeviceDir + "/" + v.Name }

// MountPath is where the Initializer mounts the opened volume.
func (v Volume) MountPath() string { return MountDir + "/" + v.Name }

// SharedVolumeName is the name of the emptyDir that shares the mount.
func (v Volume) SharedVolumeName() string { return VolumePrefix + v.Name }

// KeyLabel is the HKDF info of the volume's key.
func (v Volume) KeyLabel() string { return KeyLabelPrefix + v.Claim }

// Format returns the value of EnvVolumes for vols.
func Format(vols []Volume) string {
	parts := make([]string, len(vols))
	for i, v := range vols {
		parts[i] = v.Name + ":" + v.Claim
	}
	return strings.Join(parts, ",")
}

// Parse parses the value of EnvVolumes. The empty string is no volumes.
func Parse(s string) ([]Volume, error) {
	if s == "" {
		return nil, nil
	}
	var vols []Volume
	for i, part := range strings.Split(s, ",") {
		name, claim, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("%s entry %d %q: want volume:claim", EnvVolumes, i, part)
		}
		if err := Check(Volume{Name: name, Claim: claim}); err != nil {
			return nil, fmt.Errorf("%s entry %d: %w", EnvVolumes, i, err)
		}
		if slices.ContainsFunc(vols, func(v Volume) bool { return v.Name == name }) {
			return nil, fmt.Errorf("%s entry %d: volume %q listed twice", EnvVolumes, i, name)
		}
		vols = append(vols, Volume{Name: name, Claim: claim})
	}
	return vols, nil
}

var (
	labelRe     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	subdomainRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ParseFSGroup parses the value of EnvFSGroup; "" is none.
func ParseFSGroup(s string) (*int64, error) {
	if s == "" {
		return nil, nil
	}
	g, err := strconv.ParseInt(s, 10, 64)
	if err != nil || g < 0 || g > math.MaxUint32-1 {
		return nil, fmt.Errorf("%s %q: not a group ID", EnvFSGroup, s)
	}
	return &g, nil
}

// Check checks that v's names are valid: the volume name a DNS label (RFC
// 1123) whose shared volume name is one too, the claim a DNS subdomain.
func Check(v Volume) error {
	if !labelRe.MatchString(v.Name) || len(v.SharedVolumeName()) > 63 {
		return fmt.Errorf("volume %q: not a DNS label of at most %d characters (the shared volume %q must be a DNS label)", v.Name, 63-len(VolumePrefix), v.SharedVolumeName())
	}
	if !subdomainRe.MatchString(v.Claim) || len(v.Claim) > 253 {
		return fmt.Errorf("volume %q: claim %q is not a DNS subdomain", v.Name, v.Claim)
	}
	return nil
}
