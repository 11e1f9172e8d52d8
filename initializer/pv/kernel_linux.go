//go:build linux

package pv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProbeKernel finds what the running kernel offers for encrypted volumes:
// device-mapper from /proc/misc, and its registered targets from the
// DM_LIST_VERSIONS ioctl on the device-mapper control device (what
// dmsetup targets does). Where /dev/mapper/control is missing (a
// container's /dev), a private node is made from the misc minor that
// /proc/misc gives, as libdevmapper does.
func ProbeKernel() Kernel {
	misc, err := os.ReadFile("/proc/misc")
	if err != nil {
		return Kernel{TargetsErr: fmt.Errorf("reading /proc/misc: %w", err)}
	}
	minor, ok := miscMinor(misc, "device-mapper")
	if !ok {
		return Kernel{}
	}
	k := Kernel{DeviceMapper: true}
	k.Targets, k.TargetsErr = listTargets(minor)
	return k
}

// miscMinor returns the minor number /proc/misc gives name.
func miscMinor(misc []byte, name string) (uint32, bool) {
	for line := range bytes.Lines(misc) {
		f := strings.Fields(string(line))
		if len(f) == 2 && f[1] == name {
			n, err := strconv.ParseUint(f[0], 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

// listTargets asks the kernel for its device-mapper targets.
func listTargets(minor uint32) ([]string, error) {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		dir, derr := os.MkdirTemp("", "contrast-dm-")
		if derr != nil {
			return nil, fmt.Errorf("making a device-mapper control node: %w", derr)
		}
		defer os.RemoveAll(dir)
		node := filepath.Join(dir, "control")
		// the misc major (10) and the minor /proc/misc gives
		dev := unix.Mkdev(10, minor)
		if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(dev)); err != nil { //nolint:gosec // fits: major 10, a 32-bit minor
			return nil, fmt.Errorf("making a device-mapper control node: %w", err)
		}
		f, err = os.OpenFile(node, os.O_RDWR, 0) //nolint:gosec // the node this function made in its private folder
	}
	if err != nil {
		return nil, fmt.Errorf("opening the device-mapper control device: %w", err)
	}
	defer f.Close()
	const size = 16 << 10
	buf := make([]byte, size)
	order := binary.NativeEndian
	order.PutUint32(buf[0:4], unix.DM_VERSION_MAJOR)
	order.PutUint32(buf[12:16], size)
	order.PutUint32(buf[16:20], sizeofDMIoctl)
	//nolint:gosec // the ioctl writes its answer into buf, which it is given the size of
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.DM_LIST_VERSIONS, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return nil, fmt.Errorf("DM_LIST_VERSIONS: %w", errno)
	}
	return parseTargetVersions(buf, order)
}
