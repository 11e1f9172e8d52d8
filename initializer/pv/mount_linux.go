//go:build linux

package pv

import "golang.org/x/sys/unix"

func mountExt4(source, target string) error {
	return unix.Mount(source, target, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "")
}

func unmount(target string) error { return unix.Unmount(target, 0) }
