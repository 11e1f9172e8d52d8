package pv

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// KeySize is the size of a volume's key: the passphrase of the LUKS2
// keyslot (cryptsetup draws the volume key itself).
const KeySize = 32

// Key derives the key of v from the workload secret:
// HKDF-SHA256(secret, info "PV: <claim>"), no salt.
func Key(workloadSecret []byte, v Volume) ([]byte, error) {
	if len(workloadSecret) == 0 {
		return nil, errors.New("no workload secret: the manifest entry of this pod needs a WorkloadSecretID for encrypted volumes")
	}
	return hkdf.Key(sha256.New, workloadSecret, nil, v.KeyLabel(), KeySize)
}

// Opener opens encrypted volumes with the cryptsetup and mkfs.ext4 programs
// (Debian cryptsetup-bin and e2fsprogs).
type Opener struct {
	// Cryptsetup and MkfsExt4 are the programs (default: found in PATH).
	Cryptsetup, MkfsExt4 string
	// Logger receives progress (default none). It never sees a key.
	Logger *slog.Logger
	// Mount mounts the opened file system (default: mount(2) as ext4
	// with nosuid,nodev).
	Mount func(source, target string) error
	// FSGroup is the pod's fsGroup (nil: none); see EnvFSGroup.
	FSGroup *int64
	// Integrity is the integrity protection of the volumes this opener
	// formats ("": ChooseIntegrity over Kernel's answer, at the first
	// format). A volume that exists keeps the mode its header records.
	Integrity Integrity
	// Kernel probes the kernel for ChooseIntegrity (default ProbeKernel).
	Kernel func() Kernel
}

// formatIntegrity returns the integrity protection of a volume formatted
// now, and why.
func (o *Opener) formatIntegrity() (Integrity, string) {
	if o.Integrity != "" {
		return o.Integrity, "configured"
	}
	probe := o.Kernel
	if probe == nil {
		probe = ProbeKernel
	}
	return ChooseIntegrity(probe())
}

// MapperName is the device-mapper name of v's opened volume.
func MapperName(v Volume) string { return VolumePrefix + v.Name }

// Open opens the LUKS2 volume at device under key, formatting it (LUKS2,
// AES-XTS with integrity where the kernel has it, then ext4) if it holds no
// LUKS header yet, and mounts its file
// system on target. A device that holds a LUKS header the key does not open
// is never reformatted: that is another workload's volume (or ours with a
// changed secret), and Open fails.
func (o *Opener) Open(ctx context.Context, v Volume, device, target string, key []byte) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("volume", v.Name)
	cs := o.cryptsetup()
	formatted, err := o.Prepare(ctx, v, device, key)
	if err != nil {
		return err
	}
	// the record of the mode the volume was formatted with, which the
	// open uses (the header's, not this kernel's choice)
	integrity, err := o.HeaderIntegrity(ctx, device)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if mode, why := o.formatIntegrity(); integrity == string(IntegrityNone) && mode != IntegrityNone {
		return fmt.Errorf("volume %q: %w (%s)", v.Name, ErrIntegrityDowngrade, why)
	}
	name := MapperName(v)
	if err := o.run(ctx, key, cs, "open", "--type", "luks2", "--key-file", "-", device, name); err != nil {
		return fmt.Errorf("volume %q: opening %s: %w", v.Name, device, err)
	}
	mapped := filepath.Join("/dev/mapper", name)
	fresh, err := noExt4(mapped)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if fresh {
		mkfs := o.MkfsExt4
		if mkfs == "" {
			mkfs = "mkfs.ext4"
		}
		log.Info("creating the file system (ext4)")
		if err := o.run(ctx, nil, mkfs, "-q", "-L", name, mapped); err != nil {
			return fmt.Errorf("volume %q: creating the file system: %w", v.Name, err)
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	mount := o.Mount
	if mount == nil {
		mount = mountExt4
	}
	if err := mount(mapped, target); err != nil {
		return fmt.Errorf("volume %q: mounting on %s: %w", v.Name, target, err)
	}
	if o.FSGroup != nil {
		if err := applyFSGroup(target, *o.FSGroup); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	log.Info("volume open", "mountPoint", target, "formatted", formatted, "integrity", integrity)
	return nil
}

// ErrIntegrityDowngrade is returned for a volume whose header records no
// integrity protection where this kernel would format it with integrity:
// the guest kernel is measured, so every pod of a workload would have
// formatted it with integrity, and a header without is a host's rewrite
// (or a device formatted elsewhere). It is not opened.
var ErrIntegrityDowngrade = errors.New("the volume's header records no integrity protection, but this kernel formats volumes with integrity")

// ErrWrongKey is returned when a device holds a LUKS header that the key
// does not open.
var ErrWrongKey = errors.New("the key does not open the volume: it is another workload's, or this workload's secret changed")

// Prepare formats device (LUKS2, AES-XTS-512 with the integrity protection
// formatIntegrity chooses, one keyslot for key) if it holds no LUKS header
// yet and checks that key opens it, without mapping it (no device-mapper
// needed, except to format with integrity, which is chosen only where the
// kernel has it). It reports whether it formatted the device. A
// device whose header key does not open is never reformatted: ErrWrongKey.
func (o *Opener) Prepare(ctx context.Context, v Volume, device string, key []byte) (bool, error) {
	cs := o.cryptsetup()
	luks, err := o.isLUKS(ctx, cs, device)
	if err != nil {
		return false, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if !luks {
		mode, why := o.formatIntegrity()
		iargs, err := integrityArgs(mode)
		if err != nil {
			return false, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if o.Logger != nil {
			o.Logger.Info("formatting the volume: no LUKS header (first use)", "volume", v.Name, "integrity", string(mode), "because", why)
		}
		args := []string{"luksFormat", "--batch-mode", "--type", "luks2",
			"--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256",
			// the key is 256 bits from HKDF: a slow KDF adds nothing
			// and argon2's memory would burden a small guest
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
		args = append(args, iargs...)
		args = append(args, "--label", MapperName(v), "--key-file", "-", device)
		if err := o.run(ctx, key, cs, args...); err != nil {
			return false, fmt.Errorf("volume %q: formatting %s (integrity %s): %w", v.Name, device, mode, err)
		}
	}
	err = o.run(ctx, key, cs, "open", "--test-passphrase", "--type", "luks2", "--key-file", "-", device)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return !luks, nil
	case errors.As(err, &ee) && ee.ExitCode() == 2: // no keyslot opens with the key
		return false, fmt.Errorf("volume %q: %w", v.Name, ErrWrongKey)
	}
	return false, fmt.Errorf("volume %q: checking the key: %w", v.Name, err)
}

func (o *Opener) cryptsetup() string {
	if o.Cryptsetup == "" {
		return "cryptsetup"
	}
	return o.Cryptsetup
}

// OpenAll opens every volume of vols at its device path and mounts it at
// its mount path (see Volume), with the key derived from workloadSecret.
func (o *Opener) OpenAll(ctx context.Context, vols []Volume, workloadSecret []byte) error {
	for _, v := range vols {
		key, err := Key(workloadSecret, v)
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if err := o.Open(ctx, v, v.DevicePath(), v.MountPath(), key); err != nil {
			return err
		}
	}
	return nil
}

// Close unmounts target and closes v's mapping (tests, and a clean stop).
func (o *Opener) Close(ctx context.Context, v Volume, target string) error {
	cs := o.cryptsetup()
	var errs []error
	if err := unmount(target); err != nil {
		errs = append(errs, fmt.Errorf("unmounting %s: %w", target, err))
	}
	if err := o.run(ctx, nil, cs, "close", MapperName(v)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isLUKS reports whether device holds a LUKS header (cryptsetup isLuks:
// exit status 0 yes, 1 no, anything else an error).
func (o *Opener) isLUKS(ctx context.Context, cs, device string) (bool, error) {
	err := o.run(ctx, nil, cs, "isLuks", device)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false, nil
	}
	return false, fmt.Errorf("reading the header of %s: %w", device, err)
}

// run runs a program with stdin (nil: none) and returns its stderr in the
// error. stdin carries the key; it is never logged or put into an error.
func (o *Opener) run(ctx context.Context, stdin []byte, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, prog, args...) //nolint:gosec // the programs and their arguments are this package's
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 512 {
			msg = msg[:512]
		}
		if msg != "" {
			return fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), args[0], err, msg)
		}
		return fmt.Errorf("%s %s: %w", filepath.Base(prog), args[0], err)
	}
	return nil
}

// applyFSGroup gives dir the group gid, group read-write-search and setgid
// (new files inherit the group), unless it has them: the kubelet's
// fsGroup handling of a volume's root (fsGroupChangePolicy OnRootMismatch;
// the files of the volume keep what the workload gave them).
func applyFSGroup(dir string, gid int64) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("the owner of %s is unknown here", dir)
	}
	want := fi.Mode().Perm() | 0o070 | os.ModeSetgid
	if int64(st.Gid) == gid && fi.Mode()&(os.ModePerm|os.ModeSetgid) == want {
		return nil
	}
	if err := os.Lchown(dir, -1, int(gid)); err != nil {
		return fmt.Errorf("giving %s the fsGroup %d: %w", dir, gid, err)
	}
	if err := os.Chmod(dir, want); err != nil {
		return fmt.Errorf("making %s writable for the fsGroup: %w", dir, err)
	}
	return nil
}

// noExt4 reports whether the device has no ext4 superblock (magic 0xEF53 at
// byte 1080): a fresh volume, or one whose first sectors the host changed
// (they decrypt to noise; the volume's data is lost either way).
func noExt4(device string) (bool, error) {
	f, err := os.Open(device) //nolint:gosec // the mapped device of a volume this package opened
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1080); err != nil {
		return false, fmt.Errorf("reading the superblock of %s: %w", device, err)
	}
	return magic != [2]byte{0x53, 0xef}, nil
}
