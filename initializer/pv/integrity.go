package pv

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Integrity is the integrity protection a volume is formatted with.
type Integrity string

const (
	// IntegrityHMACSHA256 is authenticated encryption: AES-XTS with an
	// HMAC-SHA256 tag per sector, stored by a dm-integrity device under
	// the dm-crypt one (cryptsetup --integrity hmac-sha256). A sector the
	// host changed, or replaced by an older version of itself, fails to
	// read (EILSEQ) instead of decrypting to noise. Not detected: a
	// rollback of the whole volume to an earlier state.
	IntegrityHMACSHA256 Integrity = "hmac-sha256"
	// IntegrityNone is AES-XTS alone: confidential, but the host can
	// corrupt or roll back single sectors undetected.
	IntegrityNone Integrity = "none"
)

// Kernel is what the kernel offers for encrypted volumes, as ProbeKernel
// finds it.
type Kernel struct {
	// DeviceMapper: /proc/misc lists device-mapper.
	DeviceMapper bool
	// Targets are the device-mapper targets the kernel has registered
	// (what dmsetup targets lists: built in, or a module already
	// loaded). Nil with TargetsErr set if they could not be listed.
	Targets    []string
	TargetsErr error
}

// ChooseIntegrity decides the integrity protection of a volume formatted
// now, and says why: hmac-sha256 where the kernel has registered both the
// device-mapper crypt and integrity targets, none otherwise. Whatever the
// mode, the LUKS2 header records it and every later open uses the header's
// (see HeaderIntegrity): a volume keeps the mode it was formatted with.
func ChooseIntegrity(k Kernel) (Integrity, string) {
	switch {
	case !k.DeviceMapper:
		return IntegrityNone, "the kernel has no device-mapper (no device-mapper in /proc/misc)"
	case k.TargetsErr != nil:
		return IntegrityNone, fmt.Sprintf("the device-mapper targets cannot be listed: %v", k.TargetsErr)
	case !slices.Contains(k.Targets, "integrity"):
		return IntegrityNone, fmt.Sprintf("the kernel has no device-mapper integrity target (registered: %s)", strings.Join(k.Targets, ", "))
	case !slices.Contains(k.Targets, "crypt"):
		// a module loaded on demand by the first open; the integrity
		// target alone is what the choice needs, so say it
		return IntegrityHMACSHA256, "the kernel has the device-mapper integrity target (crypt is not registered yet: loaded on the first open)"
	}
	return IntegrityHMACSHA256, "the kernel has the device-mapper integrity and crypt targets"
}

// integrityArgs are the cryptsetup luksFormat arguments of mode.
// cryptsetup adds the integrity key to --key-size: hmac-sha256 gives a
// 96-byte volume key (512 bits of AES-XTS, 256 of HMAC), in the keyslot
// like any volume key. The device is wiped at format (the default), so
// that every sector has a valid tag and reading a never-written one is
// not an error.
func integrityArgs(mode Integrity) ([]string, error) {
	switch mode {
	case IntegrityNone:
		return nil, nil
	case IntegrityHMACSHA256:
		return []string{"--integrity", string(IntegrityHMACSHA256)}, nil
	}
	return nil, fmt.Errorf("unknown integrity mode %q", mode)
}

// dmNameLen and dmUUIDLen are DM_NAME_LEN and DM_UUID_LEN of
// <linux/dm-ioctl.h>; sizeofDMIoctl is sizeof(struct dm_ioctl).
const (
	dmNameLen     = 128
	dmUUIDLen     = 129
	sizeofDMIoctl = 312
)

// parseTargetVersions reads the answer of DM_LIST_VERSIONS: from
// data_start on, struct dm_target_versions { u32 next; u32 version[3];
// char name[]; } records, each next bytes after the previous one (0 ends
// the list). buf is the whole ioctl buffer (struct dm_ioctl first),
// native byte order.
func parseTargetVersions(buf []byte, order binary.ByteOrder) ([]string, error) {
	if len(buf) < sizeofDMIoctl {
		return nil, errors.New("short device-mapper answer")
	}
	dataSize := order.Uint32(buf[12:16])
	dataStart := order.Uint32(buf[16:20])
	flags := order.Uint32(buf[28:32])
	if flags&dmBufferFullFlag != 0 {
		return nil, errors.New("the device-mapper target list does not fit the buffer")
	}
	if int(dataSize) > len(buf) || dataStart > dataSize {
		return nil, fmt.Errorf("device-mapper answer claims %d bytes of data from %d in a buffer of %d", dataSize, dataStart, len(buf))
	}
	var names []string
	for off := int(dataStart); off < int(dataSize); {
		if off+16 > int(dataSize) {
			return nil, fmt.Errorf("truncated device-mapper target record at %d", off)
		}
		next := int(order.Uint32(buf[off : off+4]))
		end := int(dataSize)
		if next != 0 {
			end = off + next
		}
		if next != 0 && (next < 16 || end > int(dataSize)) {
			return nil, fmt.Errorf("invalid device-mapper target record at %d (next %d)", off, next)
		}
		name, _, ok := bytes.Cut(buf[off+16:end], []byte{0})
		if !ok {
			return nil, fmt.Errorf("unterminated device-mapper target name at %d", off)
		}
		if len(name) > 0 {
			names = append(names, string(name))
		}
		if next == 0 {
			break
		}
		off = end
	}
	slices.Sort(names)
	return names, nil
}

// dmBufferFullFlag is DM_BUFFER_FULL_FLAG.
const dmBufferFullFlag = 1 << 8

// luks2Metadata is the part of a LUKS2 header's JSON metadata that says
// how the data is encrypted.
type luks2Metadata struct {
	Segments map[string]struct {
		Type       string `json:"type"`
		Encryption string `json:"encryption"`
		Integrity  *struct {
			Type string `json:"type"`
		} `json:"integrity"`
	} `json:"segments"`
}

// parseHeaderIntegrity returns the integrity protection of the crypt
// segment in a LUKS2 header's JSON metadata (cryptsetup luksDump
// --dump-json-metadata): IntegrityNone, or the kernel's name of the tag
// algorithm (hmac-sha256 volumes say "hmac(sha256)").
func parseHeaderIntegrity(metadata []byte) (string, error) {
	var m luks2Metadata
	if err := json.Unmarshal(metadata, &m); err != nil {
		return "", fmt.Errorf("reading the LUKS2 metadata: %w", err)
	}
	var out []string
	for _, s := range m.Segments {
		if s.Type != "crypt" {
			continue
		}
		if s.Integrity == nil || s.Integrity.Type == "" {
			out = append(out, string(IntegrityNone))
		} else {
			out = append(out, s.Integrity.Type)
		}
	}
	switch len(out) {
	case 0:
		return "", errors.New("the LUKS2 metadata has no crypt segment")
	case 1:
		return out[0], nil
	}
	return "", fmt.Errorf("the LUKS2 metadata has %d crypt segments (a re-encryption in progress?)", len(out))
}

// HeaderIntegrity reads the integrity protection recorded in the LUKS2
// header of device (see parseHeaderIntegrity): the mode every open of the
// volume uses, whatever the kernel of the opening node would choose.
func (o *Opener) HeaderIntegrity(ctx context.Context, device string) (string, error) {
	cmd := exec.CommandContext(ctx, o.cryptsetup(), "luksDump", "--dump-json-metadata", device) //nolint:gosec // this package's program and a device path it was given
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("cryptsetup luksDump: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseHeaderIntegrity(out)
}
