package pv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unavailable skips t with the reason, or fails it under CI (CI set): CI
// must run these tests.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure, not a skip")
	}
	t.Skip(msg)
}

// loopDevice creates a sparse file of size bytes and a loop device over it,
// both removed when the test ends. It needs root, losetup and cryptsetup.
func loopDevice(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "not running as root (this test needs root to create a loop device)")
	}
	for _, prog := range []string{"losetup", "cryptsetup"} {
		if _, err := exec.LookPath(prog); err != nil {
			unavailable(t, "%s not found (Debian util-linux, cryptsetup-bin): %v", prog, err)
		}
	}
	file := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(file)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	out, err := exec.CommandContext(context.Background(), "losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		unavailable(t, "the kernel refuses a loop device: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.CommandContext(context.Background(), "losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("detaching %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// requireDeviceMapper skips t unless dm-crypt volumes can be opened here.
//
// A kernel without device-mapper is a property of the machine, not a broken
// set-up: the CI machine of this project has none (no device-mapper in
// /proc/misc, and modules cannot be loaded), so there the test skips and
// says why, and docs say that dm-crypt was not exercised. On a machine that
// has it, CONTRAST_REQUIRE_DM_CRYPT=1 turns the skip into a failure.
func requireDeviceMapper(t testing.TB) {
	t.Helper()
	misc, err := os.ReadFile("/proc/misc")
	if err != nil || !bytes.Contains(misc, []byte("device-mapper")) {
		msg := "the kernel has no device-mapper (no device-mapper in /proc/misc), so dm-crypt volumes cannot be opened here"
		if os.Getenv("CONTRAST_REQUIRE_DM_CRYPT") != "" {
			t.Fatal(msg + "; CONTRAST_REQUIRE_DM_CRYPT is set, so this is a failure")
		}
		t.Skip(msg + " (NOT EXERCISED; set CONTRAST_REQUIRE_DM_CRYPT=1 where the kernel has it)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		unavailable(t, "mkfs.ext4 not found (Debian e2fsprogs): %v", err)
	}
}

func TestKey(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a, err := Key(secret, Volume{Name: "data", Claim: "data"})
	require.NoError(t, err)
	assert.Len(t, a, KeySize)
	again, err := Key(secret, Volume{Name: "other-name", Claim: "data"})
	require.NoError(t, err)
	assert.Equal(t, a, again, "the key depends on the claim, not the volume's name in the pod")
	b, err := Key(secret, Volume{Name: "data", Claim: "logs"})
	require.NoError(t, err)
	assert.NotEqual(t, a, b)
	c, err := Key(bytes.Repeat([]byte{8}, 32), Volume{Name: "data", Claim: "data"})
	require.NoError(t, err)
	assert.NotEqual(t, a, c)
	_, err = Key(nil, Volume{Name: "data", Claim: "data"})
	require.ErrorContains(t, err, "WorkloadSecretID")
}

// TestPrepare formats a loop device on first use and checks keys: the same
// workload secret and claim open it again without reformatting; another
// workload's secret or another claim's key do not, and never reformat it.
// It needs no device-mapper.
func TestPrepare(t *testing.T) {
	dev := loopDevice(t, 32<<20)
	v := Volume{Name: "data", Claim: "data"}
	key, err := Key(bytes.Repeat([]byte{1}, 32), v)
	require.NoError(t, err)
	o := &Opener{}

	formatted, err := o.Prepare(t.Context(), v, dev, key)
	require.NoError(t, err)
	assert.True(t, formatted, "first use")
	hdr := make([]byte, 6)
	f, err := os.Open(dev)
	require.NoError(t, err)
	_, err = f.ReadAt(hdr, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, []byte("LUKS\xba\xbe"), hdr, "a LUKS header")

	// the header records the mode this kernel's features choose
	mode, _ := ChooseIntegrity(ProbeKernel())
	recorded, err := o.HeaderIntegrity(t.Context(), dev)
	require.NoError(t, err)
	assert.Equal(t, map[Integrity]string{IntegrityNone: "none", IntegrityHMACSHA256: "hmac(sha256)"}[mode], recorded)

	formatted, err = o.Prepare(t.Context(), v, dev, key)
	require.NoError(t, err)
	assert.False(t, formatted, "a later use opens the volume")

	other, err := Key(bytes.Repeat([]byte{2}, 32), v)
	require.NoError(t, err)
	otherClaim, err := Key(bytes.Repeat([]byte{1}, 32), Volume{Name: "data", Claim: "logs"})
	require.NoError(t, err)
	for name, k := range map[string][]byte{"another workload secret": other, "another claim": otherClaim} {
		_, err := o.Prepare(t.Context(), v, dev, k)
		require.ErrorIs(t, err, ErrWrongKey, name)
	}
	// still ours: nothing was reformatted
	formatted, err = o.Prepare(t.Context(), v, dev, key)
	require.NoError(t, err)
	assert.False(t, formatted)
}

// TestOpenRoundTrip opens a loop device as the Initializer does, writes a
// marker through the mounted file system, closes it, finds no plaintext on
// the raw device, and reads the marker back after opening it again. It
// needs device-mapper (dm-crypt).
func TestOpenRoundTrip(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	requireDeviceMapper(t)
	v := Volume{Name: "data", Claim: "data"}
	key, err := Key(bytes.Repeat([]byte{1}, 32), v)
	require.NoError(t, err)
	o := &Opener{}
	target := filepath.Join(t.TempDir(), "mnt")
	marker := []byte("contrast-pv-marker-7f3a9c")

	require.NoError(t, o.Open(t.Context(), v, dev, target, key))
	require.NoError(t, os.WriteFile(filepath.Join(target, "marker"), marker, 0o600))
	require.NoError(t, o.Close(t.Context(), v, target))

	raw, err := os.ReadFile(dev)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(raw, marker), "plaintext on the raw device")

	require.NoError(t, o.Open(t.Context(), v, dev, target, key))
	got, err := os.ReadFile(filepath.Join(target, "marker"))
	require.NoError(t, err)
	assert.Equal(t, marker, got)
	require.NoError(t, o.Close(t.Context(), v, target))

	other, err := Key(bytes.Repeat([]byte{2}, 32), v)
	require.NoError(t, err)
	require.ErrorIs(t, o.Open(t.Context(), v, dev, target, other), ErrWrongKey)
}

func TestApplyFSGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		unavailable(t, "not running as root (giving a folder another group needs CAP_CHOWN)")
	}
	dir := filepath.Join(t.TempDir(), "root")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, applyFSGroup(dir, 1000))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, uint32(1000), fi.Sys().(*syscall.Stat_t).Gid)
	assert.Equal(t, os.FileMode(0o775)|os.ModeSetgid, fi.Mode()&(os.ModePerm|os.ModeSetgid))
	// a second open changes nothing
	require.NoError(t, applyFSGroup(dir, 1000))
	fi2, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, fi.Mode(), fi2.Mode())
}
