package pv

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const (
	benchBlock = 4 << 10
	benchFile  = 32 << 20
)

// BenchmarkVolumeIO measures sequential and random 4 KiB reads and writes
// (O_DIRECT, so the page cache does not hide the device) on an encrypted
// volume as the Initializer opens it and, as the baseline of the same run,
// on ext4 directly on a loop device of the same size. Report the ratio
// encrypted/plain per operation; dm-crypt's own overhead is the floor. It
// needs root, losetup, cryptsetup, mkfs.ext4 and device-mapper.
func BenchmarkVolumeIO(b *testing.B) {
	for _, mode := range []string{"plain", "encrypted"} {
		b.Run(mode, func(b *testing.B) {
			dir := benchVolume(b, mode)
			path := filepath.Join(dir, "bench")
			require.NoError(b, os.WriteFile(path, bytes.Repeat([]byte{0x5a}, benchFile), 0o600))
			f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
			require.NoError(b, err)
			b.Cleanup(func() { _ = f.Close() })
			buf := alignedBlock()
			blocks := int64(benchFile / benchBlock)
			for _, op := range []string{"seq-write", "seq-read", "rand-write", "rand-read"} {
				b.Run(op, func(b *testing.B) {
					b.SetBytes(benchBlock)
					r := rand.New(rand.NewPCG(1, 2))
					var i int64
					for b.Loop() {
						off := (i % blocks) * benchBlock
						if op == "rand-write" || op == "rand-read" {
							off = r.Int64N(blocks) * benchBlock
						}
						i++
						var err error
						if op == "seq-write" || op == "rand-write" {
							_, err = f.WriteAt(buf, off)
						} else {
							_, err = f.ReadAt(buf, off)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// alignedBlock is a block-sized buffer aligned for O_DIRECT.
func alignedBlock() []byte {
	raw := make([]byte, 2*benchBlock)
	off := int(uintptr(unsafe.Pointer(&raw[0])) & (benchBlock - 1))
	if off != 0 {
		off = benchBlock - off
	}
	return raw[off : off+benchBlock]
}

// benchVolume mounts a fresh loop device of 128 MiB: ext4 directly
// (plain) or opened by the Opener (encrypted).
func benchVolume(b *testing.B, mode string) string {
	b.Helper()
	dev := loopDevice(b, 128<<20)
	target := filepath.Join(b.TempDir(), "mnt")
	if mode == "plain" {
		if _, err := exec.LookPath("mkfs.ext4"); err != nil {
			unavailable(b, "mkfs.ext4 not found (Debian e2fsprogs): %v", err)
		}
		out, err := exec.CommandContext(context.Background(), "mkfs.ext4", "-q", dev).CombinedOutput()
		require.NoError(b, err, "%s", out)
		require.NoError(b, os.MkdirAll(target, 0o750))
		require.NoError(b, mountExt4(dev, target))
		b.Cleanup(func() { _ = unmount(target) })
		return target
	}
	requireDeviceMapper(b)
	v := Volume{Name: "bench", Claim: "bench"}
	key, err := Key(bytes.Repeat([]byte{3}, 32), v)
	require.NoError(b, err)
	o := &Opener{}
	require.NoError(b, o.Open(context.Background(), v, dev, target, key))
	b.Cleanup(func() { _ = o.Close(context.Background(), v, target) })
	return target
}
